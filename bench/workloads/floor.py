"""``floor`` (``--floor``): what the disk and plain sqlite3 allow, measured in this run.

* fsync: N write+fsync pairs of 4 KiB in the scratch directory (a commit at
  synchronous=FULL costs at least one of these).
* sqlite3: the rows a store run wrote (events over 10,000 interleaved streams
  and their ``streams`` rows), inserted by plain ``executemany`` into a copy
  of the store's schema in large transactions, on a connection with the
  store's writer pragmas (WAL, synchronous=FULL, cache_size, page_size...).
* one-row commits: the same rows one per transaction, alternately committed
  on the event loop's own thread (blocking it) and awaited through a worker
  thread (``run_in_executor``), and the worker-thread round trip alone. What
  a single appender waits for at the least: a store that keeps the event
  loop free (as ours does) pays the commit plus the round trip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench._context import Context, Workload, new_store
from bench._measure import LatencyRecorder, NotAvailable, RunOutput, Sample, percentile
from bench.workloads import _rawsqlite
from bench.workloads.append import _appenders

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {"fsyncs": 10, "rows": 200, "streams": 40, "txn_sizes": [100], "commits": 10},
    "quick": {
        "fsyncs": 200,
        "rows": 20_000,
        "streams": 10_000,
        "txn_sizes": [1_000, 10_000],
        "commits": 300,
    },
    "full": {
        "fsyncs": 1_000,
        "rows": 200_000,
        "streams": 10_000,
        "txn_sizes": [1_000, 10_000],
        "commits": 2_000,
    },
}


def _p50(seconds: list[float]) -> float:
    """The median of durations in seconds, in milliseconds."""
    return percentile(sorted(seconds), 50) * 1000


async def run(ctx: Context) -> RunOutput:
    """One run: fsync rate, then plain sqlite3 inserts at each transaction size."""
    sizes = ctx.sizes(SIZES)
    out = RunOutput()
    fsyncs = LatencyRecorder()
    fsyncs.extend(_rawsqlite.fsync_times(ctx.workdir, sizes["fsyncs"]))
    pct = fsyncs.summary((50, 99))
    params = {"fsyncs": sizes["fsyncs"]}
    out.samples += [
        Sample("fsync rate", len(fsyncs.values) / sum(fsyncs.values), "fsyncs/s", params=params),
        Sample("fsync p50", pct["p50"], "ms", params=params),
        Sample("fsync p99", pct["p99"], "ms", params=params),
    ]
    try:
        async with new_store(ctx, "floor", kind="sqlite") as (store, source):
            async with store:
                await _appenders(
                    store, min(1_000, sizes["streams"]), sizes["rows"], sizes["streams"], 0.0, ctx
                )
                pragmas = await _rawsqlite.store_pragmas(store)
            assert source is not None
            rows = _rawsqlite.read_store_rows(source)
            for per_txn in sizes["txn_sizes"]:
                txns = _rawsqlite.transactions(rows, per_txn)
                with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
                    conn = _rawsqlite.copy_schema(source, Path(tmp) / "floor.db", pragmas)
                    try:
                        seconds = _rawsqlite.insert_txns(conn, txns)
                    finally:
                        conn.close()
                params = {
                    "events": len(rows.events),
                    "streams_rows": len(rows.streams),
                    "events_per_txn": per_txn,
                }
                out.samples.append(
                    Sample(
                        f"sqlite3 executemany, {per_txn:,} rows/txn",
                        len(rows.events) / seconds,
                        "rows/s",
                        params=params,
                    )
                )
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
                conn = _rawsqlite.copy_schema(
                    source, Path(tmp) / "commits.db", pragmas, any_thread=True
                )
                try:
                    here, there, trip = await _rawsqlite.one_row_commits(
                        conn, _rawsqlite.transactions(rows, 1), sizes["commits"]
                    )
                finally:
                    conn.close()
            params = {"commits": len(here)}
            out.samples += [
                Sample("1-row commit p50, on the loop's thread", _p50(here), "ms", params=params),
                Sample("1-row commit p50, via a worker thread", _p50(there), "ms", params=params),
                Sample("worker thread round trip p50", _p50(trip), "ms", params=params),
            ]
            out.info["floor_pragmas"] = pragmas
    except NotAvailable as exc:
        out.info["sqlite3 floor"] = str(exc)
    return out


WORKLOAD = Workload(
    name="floor",
    summary="physical floor: fsync rate and plain sqlite3 executemany in large transactions",
    run=run,
    sizes=SIZES,
    stores=("sqlite",),
)
