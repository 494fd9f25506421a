"""``append``: the store's group commit under 1, 100 and 1,000 concurrent appenders.

Each appender appends one event per call to its own streams (spread over
10,000), with the expected version it tracks, like an actor does. Beside it, in
the same run, the raw floor: plain ``sqlite3`` inserting the very rows the
store wrote into the same schema, in transactions as large as the store's
mean batch, so the ratio shows what the store's machinery costs.
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
    "quick": {"streams": 10_000, "levels": [[1, 300], [100, 5_000], [1_000, 20_000]]},
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


def _floor(source: Path, per_txn: int, workdir: Path) -> float:
    """Rows/s of plain sqlite3 writing ``source``'s event rows into a copy of its schema."""
    rows = _rawsqlite.read_rows(source)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        conn = _rawsqlite.copy_schema(source, Path(tmp) / "floor.db")
        try:
            seconds = _rawsqlite.insert_rows(conn, "events", rows, per_txn)
        finally:
            conn.close()
    return len(rows) / seconds


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
            if head != total or stats.events != total:
                raise RuntimeError(f"wrote {total} events but the log holds {head}")
            batch = stats.events / max(stats.batches, 1)
            floor = _floor(path, round(batch), ctx.workdir) if path is not None else None
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
            # The store also keeps its streams table current; the floor does not.
            "floor": f"plain sqlite3, the run's event rows, {round(batch)} rows/txn"
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
