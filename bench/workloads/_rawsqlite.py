"""The physical floor: plain ``sqlite3`` and raw ``fsync``, no store.

asyncio appears only in :func:`one_row_commits`, to time a commit awaited
through a worker thread.

The floor a store figure is read against must do the same physical work: the
same rows into the same schema (same indexes), in transactions of the same
size, on a connection with the same pragmas. The schema and the rows are read
from the file the store just wrote; the pragmas from the store's own writer
connection at run time, so the floor follows the store when either changes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONNECTION_PRAGMAS",
    "FILE_PRAGMAS",
    "StoreRows",
    "Txn",
    "copy_schema",
    "fsync_times",
    "insert_txns",
    "one_row_commits",
    "read_pragmas",
    "read_store_rows",
    "store_pragmas",
    "transactions",
]

# Stored in the database file and only settable before the first table exists
# (https://www.sqlite.org/pragma.html#pragma_page_size, #pragma_auto_vacuum).
FILE_PRAGMAS = ("page_size", "auto_vacuum")
# Per connection, not stored in the file: each must be set on the floor's own
# connection or it runs at SQLite's defaults (e.g. a 2 MB page cache).
CONNECTION_PRAGMAS = (
    "synchronous",
    "cache_size",
    "cache_spill",
    "temp_store",
    "foreign_keys",
    "mmap_size",
    "wal_autocheckpoint",
    "locking_mode",
    "secure_delete",
    "automatic_index",
)
_ALL = (*FILE_PRAGMAS, "journal_mode", *CONNECTION_PRAGMAS)


def read_pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    """The values of every pragma the floor copies, as ``PRAGMA name`` reports them."""
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _ALL}


async def store_pragmas(store: Any) -> dict[str, Any]:
    """The pragmas of an *open* ``SQLiteStore``'s writer connection.

    Read through ``SQLiteStore.pragmas`` (rather than restating the store's
    settings here) so the floor stays in step with the store.
    """
    values: dict[str, Any] = await store.pragmas(*_ALL)
    return values


def copy_schema(
    source: Path, target: Path, pragmas: dict[str, Any], *, any_thread: bool = False
) -> sqlite3.Connection:
    """Create ``target`` with ``source``'s tables and indexes, on a connection with ``pragmas``.

    The schema is read from ``source``'s ``sqlite_master``, so the same index
    pages churn. ``pragmas`` is what :func:`store_pragmas` returned; the new
    connection is checked to report the very same values. ``any_thread``: the
    connection may be used from another thread (one at a time).

    Raises:
        RuntimeError: a pragma did not take (the floor would not be comparable).
    """
    src = sqlite3.connect(source)
    try:
        schema = src.execute(
            "SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        ).fetchall()
    finally:
        src.close()
    # isolation_level=None: no implicit BEGIN; we frame transactions ourselves.
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=not any_thread)
    try:
        for name in FILE_PRAGMAS:
            conn.execute(f"PRAGMA {name}={pragmas[name]}")
        for _type, sql in schema:
            conn.execute(sql)
        conn.execute(f"PRAGMA journal_mode={pragmas['journal_mode']}")
        for name in CONNECTION_PRAGMAS:
            conn.execute(f"PRAGMA {name}={pragmas[name]}")
        got = read_pragmas(conn)
        if got != pragmas:
            diff = {k: (got[k], v) for k, v in pragmas.items() if got.get(k) != v}
            raise RuntimeError(f"floor pragmas differ from the store's (floor, store): {diff}")
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(frozen=True)
class StoreRows:
    """The rows a store run wrote, in rowid order (the order it wrote them).

    Attributes:
        events: Rows of ``events``.
        streams: Rows of ``streams`` (one per stream, inserted with its first event).
        event_stream_col: Index of ``stream_id`` in an events row.
        stream_id_col: Index of ``id`` in a streams row.
    """

    events: list[tuple[Any, ...]]
    streams: list[tuple[Any, ...]]
    event_stream_col: int
    stream_id_col: int


def read_store_rows(source: Path) -> StoreRows:
    """Every ``events`` and ``streams`` row of ``source``, column values as stored."""
    conn = sqlite3.connect(source)
    try:
        cur = conn.execute("SELECT * FROM events ORDER BY rowid")
        events = cur.fetchall()
        event_cols = [d[0] for d in cur.description]
        cur = conn.execute("SELECT * FROM streams ORDER BY rowid")
        streams = cur.fetchall()
        stream_cols = [d[0] for d in cur.description]
    finally:
        conn.close()
    return StoreRows(events, streams, event_cols.index("stream_id"), stream_cols.index("id"))


@dataclass(frozen=True)
class Txn:
    """One floor transaction: the new streams rows, then the events rows."""

    streams: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]


def transactions(rows: StoreRows, per_txn: int) -> list[Txn]:
    """Split the rows into transactions of ``per_txn`` events, as the store batched them.

    A stream's row goes in the transaction holding its first event, as the
    store inserts it in the batch that creates the stream.
    """
    per_txn = max(per_txn, 1)
    by_id = {row[rows.stream_id_col]: row for row in rows.streams}
    seen: set[Any] = set()
    out = []
    for start in range(0, len(rows.events), per_txn):
        chunk = rows.events[start : start + per_txn]
        new = []
        for event in chunk:
            sid = event[rows.event_stream_col]
            if sid not in seen:
                seen.add(sid)
                new.append(by_id[sid])
        out.append(Txn(new, chunk))
    if seen != by_id.keys():
        raise RuntimeError("the store wrote streams rows with no event")
    return out


def _insert_sql(table: str, width: int) -> str:
    return f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"


def insert_txns(conn: sqlite3.Connection, txns: Sequence[Txn]) -> float:
    """Run ``txns`` with ``executemany`` (streams, then events, per transaction); seconds."""
    if not txns:
        return 0.0
    events_sql = _insert_sql("events", len(txns[0].events[0]))
    widths = {len(row) for t in txns for row in t.streams}
    streams_sql = _insert_sql("streams", widths.pop()) if widths else ""
    t0 = time.perf_counter()
    for txn in txns:
        conn.execute("BEGIN")
        if txn.streams:
            conn.executemany(streams_sql, txn.streams)
        conn.executemany(events_sql, txn.events)
        conn.execute("COMMIT")
    return time.perf_counter() - t0


async def one_row_commits(
    conn: sqlite3.Connection, txns: Sequence[Txn], count: int
) -> tuple[list[float], list[float], list[float]]:
    """``count`` one-row commits each way, alternating, and ``count`` bare round trips.

    Returns:
        Durations (s): ``(on the loop's thread, through a worker thread, round trip alone)``.
    """
    loop = asyncio.get_running_loop()
    here: list[float] = []
    there: list[float] = []
    trip: list[float] = []
    clock = time.perf_counter
    with ThreadPoolExecutor(1) as pool:
        await loop.run_in_executor(pool, int)  # the thread started, untimed
        for i, txn in enumerate(txns[: 2 * count]):
            t0 = clock()
            if i % 2:
                await loop.run_in_executor(pool, insert_txns, conn, [txn])
                there.append(clock() - t0)
            else:
                insert_txns(conn, [txn])
                here.append(clock() - t0)
        for _ in range(count):
            t0 = clock()
            await loop.run_in_executor(pool, int)
            trip.append(clock() - t0)
    return here, there, trip


def fsync_times(directory: Path, count: int) -> list[float]:
    """Durations (s) of ``count`` write+fsync pairs of 4 KiB in one file in ``directory``.

    One page-sized overwrite then ``os.fsync``: what a WAL commit at
    synchronous=FULL costs the disk at the least.
    """
    path = directory / "fsync.probe"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    out = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fsync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return out
