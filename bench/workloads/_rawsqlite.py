"""The physical floor: plain ``sqlite3`` and raw ``fsync``, no store, no asyncio."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["copy_schema", "fsync_times", "insert_rows", "read_rows"]


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; we frame transactions ourselves.
    conn = sqlite3.connect(path, isolation_level=None)
    # The same settings as the store at Durability.FULL: WAL, and
    # synchronous=FULL, i.e. the WAL is fsynced at every COMMIT
    # (https://www.sqlite.org/pragma.html#pragma_synchronous).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def copy_schema(source: Path, target: Path) -> sqlite3.Connection:
    """Create ``target`` with every table and index of ``source`` (read from sqlite_master).

    Reading the live schema keeps the floor in step with the store's schema:
    same tables, same indexes, so the same index pages churn.
    """
    src = sqlite3.connect(source)
    try:
        rows = src.execute(
            "SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index', rowid"
        ).fetchall()
    finally:
        src.close()
    conn = _connect(target)
    for _type, sql in rows:
        conn.execute(sql)
    return conn


def read_rows(source: Path, table: str = "events") -> list[tuple[Any, ...]]:
    """Every row of ``table`` in rowid order (the order the store wrote them)."""
    conn = sqlite3.connect(source)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def insert_rows(
    conn: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]], per_txn: int
) -> float:
    """Insert ``rows`` with ``executemany``, ``per_txn`` rows per transaction; seconds taken."""
    if not rows:
        return 0.0
    sql = f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})"
    per_txn = max(per_txn, 1)
    t0 = time.perf_counter()
    for start in range(0, len(rows), per_txn):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[start : start + per_txn])
        conn.execute("COMMIT")
    return time.perf_counter() - t0


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
