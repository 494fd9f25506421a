"""``append``: the store's group commit under 1, 100 and 1,000 concurrent appenders.

Each appender appends one event per call to its own streams (spread over
10,000), with the expected version it tracks, like an actor does. Beside it, in
the same run, the raw floor: plain ``sqlite3`` inserting the very rows the
store wrote (its ``events`` rows and the ``streams`` row of each new stream,
column for column) into the same schema with ``executemany``, in
transactions as large as the store's mean batch, on a connection with the
store's writer pragmas (WAL, synchronous, cache_size, page_size...: read from
the store at run time), so the ratio shows what the store's machinery costs.
The single appender's p50 latency has its own floor: the same rows committed
one per transaction, each awaited through a worker thread (the commit plus
the thread round trip: the least a store that keeps the event loop free can
answer in).

Each level first appends, untimed, for ``warmup`` seconds on the same store
(the way a service is warm after its first moments: SQLiteStore's default
``writer="auto"`` starts its writer process at the first large batch, ~80 ms
here, which would otherwise land inside a half-second measurement); the
floor then inserts the warm-up's rows too. The ``gc_levels`` run again on a
store built with ``gc_threshold=None`` (Python's GC settings left alone): the
rows suffixed ``(gc_threshold=None)``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import LatencyRecorder, RunOutput, Sample, now, percentile
from bench.workloads import _rawsqlite

__all__ = ["WORKLOAD", "commit_floor"]

SIZES = {
    "smoke": {
        "streams": 40,
        "levels": [[1, 10], [4, 40]],
        "gc_levels": [[4, 40]],
        "warmup": 0.01,
        "commits": 5,
    },
    # Quick levels last ~0.5 s or more each: at 300 appends (c=1, ~0.2 s) one
    # scheduler hiccup on a shared machine moved the figure by a third.
    "quick": {
        "streams": 10_000,
        "levels": [[1, 1_000], [100, 10_000], [1_000, 30_000]],
        "gc_levels": [[1_000, 30_000]],
        "warmup": 0.3,
        "commits": 300,
    },
    "full": {
        "streams": 10_000,
        "levels": [[1, 2_000], [100, 50_000], [1_000, 200_000]],
        "gc_levels": [[1_000, 200_000]],
        "warmup": 0.5,
        "commits": 1_000,
    },
}


PROGRESS_EVERY = 16
"""Appends an appender makes between two progress updates."""


async def _appenders(
    store: Any, concurrency: int, total: int, streams: int, warmup: float, ctx: Context
) -> tuple[float, int, LatencyRecorder]:
    """Warm up for ``warmup`` s, then run ``concurrency`` appenders for ``total`` appends.

    Returns:
        ``(wall seconds of the timed part, warm-up appends, latencies)``.
    """
    from stores import NewEvent

    if streams % concurrency:
        raise ValueError(f"streams ({streams}) must be a multiple of concurrency ({concurrency})")
    latencies = LatencyRecorder()
    task = ctx.progress.task(f"append c={concurrency}", total)
    warm_until = now() + warmup
    warm = [0]
    arrived = [0]
    go = anyio.Event()
    started = [0.0]

    async def appender(j: int, count: int) -> None:
        # Appender j owns streams j, j+c, j+2c, ... so no two appenders race
        # on a stream and every expected version holds.
        versions: dict[str, int] = {}
        i = 0
        while now() < warm_until:  # untimed
            stream = f"Bench-{(j + i * concurrency) % streams}"
            event = NewEvent("Bench.Appended", {"n": i, "appender": j})
            i += 1
            versions[stream] = (
                await store.append(stream, [event], versions.get(stream, 0))
            ).version
            warm[0] += 1
        arrived[0] += 1
        if arrived[0] == concurrency:  # everyone warm: start the clock together
            started[0] = now()
            go.set()
        await go.wait()
        # The timed loop keeps the harness's own work small (it shares the
        # event loop with the store): the clock and the recorder bound
        # locally, progress counted every PROGRESS_EVERY appends.
        clock = time.perf_counter
        record = latencies.values.append
        for k in range(1, count + 1):
            stream = f"Bench-{(j + i * concurrency) % streams}"
            expected = versions.get(stream, 0)
            event = NewEvent("Bench.Appended", {"n": i, "appender": j})
            i += 1
            t0 = clock()
            result = await store.append(stream, [event], expected)
            record(clock() - t0)
            versions[stream] = result.version
            if not k % PROGRESS_EVERY:
                task.advance(PROGRESS_EVERY)
        task.advance(count % PROGRESS_EVERY)

    counts = [total // concurrency + (j < total % concurrency) for j in range(concurrency)]
    async with anyio.create_task_group() as tg:
        for j, count in enumerate(counts):
            tg.start_soon(appender, j, count)
    elapsed = now() - started[0]
    task.done()
    return elapsed, warm[0], latencies


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


async def commit_floor(source: Path, pragmas: dict[str, Any], count: int, workdir: Path) -> float:
    """p50 (ms) of one-row commits of ``source``'s rows awaited through a worker thread.

    What a single appender waits for at the least when the store keeps the
    event loop free: the commit plus the thread round trip
    (:func:`_rawsqlite.one_row_commits`, which alternates them with commits on
    the loop's own thread).
    """
    rows = _rawsqlite.read_store_rows(source)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        conn = _rawsqlite.copy_schema(source, Path(tmp) / "commits.db", pragmas, any_thread=True)
        try:
            _here, there, _trip = await _rawsqlite.one_row_commits(
                conn, _rawsqlite.transactions(rows, 1), count
            )
        finally:
            conn.close()
    return percentile(sorted(there), 50) * 1000


async def run(ctx: Context) -> RunOutput:
    """One run: every concurrency level on a fresh store, each beside its raw floor."""
    sizes = ctx.sizes(SIZES)
    out = RunOutput()
    levels = [(c, t, False) for c, t in sizes["levels"]]
    levels += [(c, t, True) for c, t in sizes["gc_levels"]]
    for concurrency, total, gc_untouched in levels:
        tag = " (gc_threshold=None)" if gc_untouched else ""
        async with new_store(
            ctx, f"append-c{concurrency}{'-gc' if gc_untouched else ''}", gc_untouched=gc_untouched
        ) as (store, path):
            async with store:
                elapsed, warm, lat = await _appenders(
                    store, concurrency, total, sizes["streams"], sizes["warmup"], ctx
                )
                stats = store.statistics()
                head = await store.head()
                pragmas = await _rawsqlite.store_pragmas(store) if path is not None else {}
            if head != warm + total or stats.events != warm + total:
                raise RuntimeError(f"wrote {warm + total} events but the log holds {head}")
            batch = stats.events / max(stats.batches, 1)
            floor = _floor(path, round(batch), pragmas, ctx.workdir) if path is not None else None
            # A single appender's latency, beside one-row commits through a worker thread.
            p50_floor = (
                await commit_floor(path, pragmas, sizes["commits"], ctx.workdir)
                if path is not None and concurrency == 1
                else None
            )
        params = {
            "concurrency": concurrency,
            "events": total,
            "warmup_events": warm,
            "streams": sizes["streams"],
            "gc_threshold": None if gc_untouched else "default",
        }
        rate = total / elapsed
        ref_kind = "floor" if floor is not None else None
        pct = lat.summary((50, 99))
        name = f"c={concurrency}"
        out.samples += [
            Sample(f"{name} throughput{tag}", rate, "events/s", floor, ref_kind, params),
            Sample(
                f"{name} append p50{tag}",
                pct["p50"],
                "ms",
                p50_floor,
                "floor" if p50_floor is not None else None,
                params,
            ),
            Sample(f"{name} append p99{tag}", pct["p99"], "ms", params=params),
            Sample(f"{name} mean batch{tag}", batch, "appends/txn", params=params),
        ]
        out.info[f"{name}{tag}"] = {
            "batches": stats.batches,
            "max_batch": stats.max_batch,
            "floor_pragmas": pragmas,
            "floor": f"plain sqlite3 executemany: the run's events (warm-up included) + new "
            f"streams rows, {round(batch)} events/txn, the store's pragmas"
            if floor is not None
            else "none (not SQLite)",
        }
        if p50_floor is not None:
            out.info[f"{name}{tag}"]["p50 floor"] = (
                "plain sqlite3: the run's rows one per transaction, each awaited "
                "through a worker thread (run_in_executor), the store's pragmas"
            )
    return out


WORKLOAD = Workload(
    name="append",
    summary="store group commit: events/s and append latency vs the raw sqlite3 floor",
    run=run,
    sizes=SIZES,
)
