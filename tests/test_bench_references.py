"""The benchmark's references, run small: the raw ``sqlite3`` floor and the bare loop.

What a figure is read against must do the work it stands for: the floor the
store's very rows on the store's pragmas, the bare loop the runtime's rows
for the same deposits.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from bench.workloads import _bareloop, _rawsqlite


def _table(path: Path, table: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_floor_writes_exactly_the_store_rows_with_the_store_pragmas(tmp_path: Path) -> None:
    """The floor copy holds the store's events and streams rows, on the store's pragmas."""
    from stores import NewEvent, SQLiteStore

    source = tmp_path / "events.db"

    async def write() -> dict[str, Any]:
        async with SQLiteStore(source, cache_kib=12_345) as store:
            for i in range(12):  # streams 0..3: new ones and existing ones interleaved
                await store.append(f"Bench-{i % 4}", [NewEvent("Bench.Appended", {"n": i})], i // 4)
            return await _rawsqlite.store_pragmas(store)

    pragmas = anyio.run(write)
    assert pragmas["cache_size"] == -12_345
    rows = _rawsqlite.read_store_rows(source)
    conn = _rawsqlite.copy_schema(source, tmp_path / "floor.db", pragmas)
    try:
        assert _rawsqlite.read_pragmas(conn) == pragmas
        _rawsqlite.insert_txns(conn, _rawsqlite.transactions(rows, 5))
    finally:
        conn.close()
    for table in ("events", "streams"):
        assert _table(tmp_path / "floor.db", table) == _table(source, table), table


def test_floor_one_row_commits_alternate_threads_and_write_every_row(tmp_path: Path) -> None:
    """Commits alternate between the loop's thread and a worker thread; every row lands."""
    from stores import NewEvent, SQLiteStore

    source = tmp_path / "events.db"

    async def write() -> dict[str, Any]:
        async with SQLiteStore(source) as store:
            for i in range(6):
                await store.append(f"Bench-{i % 3}", [NewEvent("Bench.Appended", {"n": i})], i // 3)
            return await _rawsqlite.store_pragmas(store)

    pragmas = anyio.run(write)
    rows = _rawsqlite.read_store_rows(source)
    conn = _rawsqlite.copy_schema(source, tmp_path / "floor.db", pragmas, any_thread=True)
    try:
        txns = _rawsqlite.transactions(rows, 1)
        here, there, trip = anyio.run(_rawsqlite.one_row_commits, conn, txns, 3)
    finally:
        conn.close()
    assert (len(here), len(there), len(trip)) == (3, 3, 3)
    assert all(t > 0 for t in [*here, *there, *trip])
    for table in ("events", "streams"):
        assert _table(tmp_path / "floor.db", table) == _table(source, table), table


def test_floor_puts_each_streams_row_in_the_transaction_of_its_first_event() -> None:
    """A new stream's row goes with its first event, as the store's batch inserts it."""
    events = [(1, 10), (2, 20), (3, 10), (4, 30)]  # (position, stream_id)
    streams = [(10, "a"), (20, "b"), (30, "c")]
    txns = _rawsqlite.transactions(_rawsqlite.StoreRows(events, streams, 1, 0), 2)
    assert [(t.streams, t.events) for t in txns] == [
        ([(10, "a"), (20, "b")], [(1, 10), (2, 20)]),
        ([(30, "c")], [(3, 10), (4, 30)]),
    ]


def test_floor_refuses_pragmas_that_do_not_take(tmp_path: Path) -> None:
    """A pragma the floor connection cannot match is an error, not a silently unfair floor."""
    source = tmp_path / "s.db"
    conn = sqlite3.connect(source, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        pragmas = _rawsqlite.read_pragmas(conn)
    finally:
        conn.close()
    pragmas["page_size"] = 1000  # not a power of two: SQLite ignores it
    with pytest.raises(RuntimeError, match="page_size"):
        _rawsqlite.copy_schema(source, tmp_path / "floor.db", pragmas)


def _bare_source(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A store file to copy the schema from, and its writer pragmas."""
    from stores import NewEvent, SQLiteStore

    source = tmp_path / "events.db"

    async def write() -> dict[str, Any]:
        async with SQLiteStore(source) as store:
            await store.append("Account-x", [NewEvent("Opened", {})], 0)
            return await _rawsqlite.store_pragmas(store)

    return source, anyio.run(write)


def test_bare_loop_commits_every_deposit_in_shared_batches(tmp_path: Path) -> None:
    """The bare loop stores the runtime's rows for each deposit, sharing commits between callers.

    Each deposit is one event at the next version of its account, shaped as
    the runtime stores it; the GC setting it ran under is put back.
    """
    import gc
    import time

    source, pragmas = _bare_source(tmp_path)
    held = gc.get_threshold()
    target = tmp_path / "bare.db"
    results = anyio.run(
        _bareloop.bare_deposits, source, target, pragmas, 10, [(1, 5), (4, 40)], 5, held[0] + 1
    )
    assert gc.get_threshold() == held
    assert [len(results[c].latencies.values) for c in (1, 4)] == [5, 40]
    assert results[1].commits == 5  # one caller: one commit per deposit
    assert 10 <= results[4].commits < 40  # four callers share commits
    rows = _table(target, "events")
    assert len(rows) == 45
    versions: dict[int, list[int]] = {}
    now_us = time.time_ns() // 1000
    for row in rows:
        versions.setdefault(row[1], []).append(row[2])
        # As the runtime writes a deposit: type name, data, metadata, schema, id, microseconds.
        assert row[3:7] == ("Account.Deposited", b'{"amount":5}', b"{}", 1)
        assert len(row[7]) == 36
        assert now_us - 60_000_000 < row[8] <= now_us
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert sorted(len(v) for v in versions.values()) == [4] * 5 + [5] * 5


def test_bare_loop_failing_commit_fails_every_caller_and_leaves_no_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that fails ends the run with a RuntimeError chained to it; no task is left."""
    source, pragmas = _bare_source(tmp_path)
    commit = _bareloop._Loop._commit
    calls = 0

    def failing(self: Any, rows: list[tuple[Any, ...]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        commit(self, rows)

    monkeypatch.setattr(_bareloop._Loop, "_commit", failing)

    async def run() -> int:
        import asyncio

        with pytest.raises(RuntimeError, match="injected") as info:
            await _bareloop.bare_deposits(
                source, tmp_path / "bare.db", pragmas, 20, [(8, 80)], 5, None
            )
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        return len(asyncio.all_tasks())

    assert anyio.run(run, backend="asyncio") == 1  # only the test's own task
