"""``append``: the store's group commit under 1, 100 and 1,000 concurrent appenders.

Each appender appends one event per call to its own streams (spread over
10,000), with the expected version it tracks, like an actor does. Beside it, in
the same run, the raw floor: plain ``sqlite3`` inserting the very rows the
store wrote (its ``events`` rows and the ``streams`` row of each new stream,
column for column) into the same schema with ``executemany``, in
transactions as large as the store's mean batch, on a connection with the
store's writer pragmas (WAL, synchronous, cache_size, page_size...: read from
the store at run time), so the ratio shows what the store's machinery costs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import LatencyRecorder, RunOutput, Sample, now
from bench.workloads import _rawsqlite

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {"streams": 40, "levels": [[1, 10], [4, 40]]},
    # Quick levels last ~0.5 s or more each: at 300 appends (c=1, ~0.2 s) one
    # scheduler hiccup on a shared machine moved the figure by a third.
    "quick": {"streams": 10_000, "levels": [[1, 1_000], [100, 10_000], [1_000, 30_000]]},
    "full": {"streams": 10_000, "levels": [[1, 2_000], [100, 50_000], [1_000, 200_000]]},
}


async def _appenders(
    store: Any, concurrency: int, total: int, streams: int, ctx: Context
) -> tuple[float, LatencyRecorder]:
    """Run ``concurrency`` appenders for ``total`` appends; (wall seconds, latencies)."""
    from stores import NewEvent

    if streams % concurrency:
        raise ValueError(f"streams ({streams}) must be a multiple of concurrency ({concurrency})")
    latencies = LatencyRecorder()
    task = ctx.progress.task(f"append c={concurrency}", total)

    async def appender(j: int, count: int) -> None:
        # Appender j owns streams j, j+c, j+2c, ... so no two appenders race
        # on a stream and every expected version holds.
        versions: dict[str, int] = {}
        for i in range(count):
            stream = f"Bench-{(j + i * concurrency) % streams}"
            expected = versions.get(stream, 0)
            event = NewEvent("Bench.Appended", {"n": i, "appender": j})
            t0 = now()
            result = await store.append(stream, [event], expected)
            latencies.add(now() - t0)
            versions[stream] = result.version
            task.advance()

    counts = [total // concurrency + (j < total % concurrency) for j in range(concurrency)]
    t0 = now()
    async with anyio.create_task_group() as tg:
        for j, count in enumerate(counts):
            tg.start_soon(appender, j, count)
    elapsed = now() - t0
    task.done()
    return elapsed, latencies


def _floor(source: Path, per_txn: int, pragmas: dict[str, Any], workdir: Path) -> float:
    """Events/s of plain sqlite3 writing ``source``'s rows into a copy of its schema."""
    rows = _rawsqlite.read_store_rows(source)
    txns = _rawsqlite.transactions(rows, per_txn)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        conn = _rawsqlite.copy_schema(source, Path(tmp) / "floor.db", pragmas)
        try:
            seconds = _rawsqlite.insert_txns(conn, txns)
        finally:
            conn.close()
    return len(rows.events) / seconds


async def run(ctx: Context) -> RunOutput:
    """One run: every concurrency level on a fresh store, each beside its raw floor."""
    sizes = ctx.sizes(SIZES)
    out = RunOutput()
    for concurrency, total in sizes["levels"]:
        async with new_store(ctx, f"append-c{concurrency}") as (store, path):
            async with store:
                elapsed, lat = await _appenders(store, concurrency, total, sizes["streams"], ctx)
                stats = store.statistics()
                head = await store.head()
                pragmas = await _rawsqlite.store_pragmas(store) if path is not None else {}
            if head != total or stats.events != total:
                raise RuntimeError(f"wrote {total} events but the log holds {head}")
            batch = stats.events / max(stats.batches, 1)
            floor = _floor(path, round(batch), pragmas, ctx.workdir) if path is not None else None
        params = {"concurrency": concurrency, "events": total, "streams": sizes["streams"]}
        rate = total / elapsed
        ref_kind = "floor" if floor is not None else None
        pct = lat.summary((50, 99))
        out.samples += [
            Sample(f"c={concurrency} throughput", rate, "events/s", floor, ref_kind, params),
            Sample(f"c={concurrency} append p50", pct["p50"], "ms", params=params),
            Sample(f"c={concurrency} append p99", pct["p99"], "ms", params=params),
            Sample(f"c={concurrency} mean batch", batch, "appends/txn", params=params),
        ]
        out.info[f"c={concurrency}"] = {
            "batches": stats.batches,
            "max_batch": stats.max_batch,
            "floor_pragmas": pragmas,
            "floor": f"plain sqlite3 executemany: the run's events + new streams rows, "
            f"{round(batch)} events/txn, the store's pragmas"
            if floor is not None
            else "none (not SQLite)",
        }
    return out


WORKLOAD = Workload(
    name="append",
    summary="store group commit: events/s and append latency vs the raw sqlite3 floor",
    run=run,
    sizes=SIZES,
)
