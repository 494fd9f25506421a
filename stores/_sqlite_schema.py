"""SQLite schema, forward migrations and connection pragmas for :class:`SQLiteStore`."""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stores._errors import StoreUnavailable

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Durability",
    "configure",
    "connect_sync",
    "migrate",
    "read_pragmas",
]


class Durability(enum.Enum):
    """How hard SQLite works to keep a COMMIT through a crash.

    Both settings run the database in WAL mode. See
    https://www.sqlite.org/pragma.html#pragma_synchronous and
    https://www.sqlite.org/wal.html#performance_considerations.

    Attributes:
        FULL: ``PRAGMA synchronous=FULL``: the WAL is fsynced at every commit, so a
            committed append survives a process crash *and* a power loss or OS
            crash. The default (DESIGN.md guarantee 2).
        NORMAL: ``PRAGMA synchronous=NORMAL``: in WAL mode the WAL is fsynced only
            at checkpoints. SQLite's docs: "A transaction committed in WAL mode
            with synchronous=NORMAL might roll back following a power loss or
            system crash", though the database stays consistent. Survives a
            process crash (the OS still holds the written WAL pages). Faster:
            no fsync per group commit.
    """

    FULL = 2
    NORMAL = 1


# Events are keyed by their global position (INTEGER PRIMARY KEY is the rowid,
# so position order is table order and read_all is a range scan of the table
# b-tree). Streams get a small integer id: the (stream_id, version) index then
# holds three small integers per event instead of a stream name, which keeps
# the index pages the writer dirties per batch few (DESIGN.md: the UNIQUE
# (stream TEXT, version) index set the write ceiling at ~50k rows/s).
_V1 = """
CREATE TABLE streams (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    version  INTEGER NOT NULL
);
CREATE INDEX streams_category ON streams (category);
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream_id      INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT NOT NULL,
    data           BLOB NOT NULL,
    metadata       BLOB NOT NULL,
    schema_version INTEGER NOT NULL,
    event_id       TEXT NOT NULL,
    recorded_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);
CREATE TABLE commands (
    command_id     TEXT PRIMARY KEY,
    stream         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_position  INTEGER NOT NULL,
    reply          BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE snapshots (
    stream         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    state          BLOB NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    PRIMARY KEY (stream, version)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Version 2: a stream's version is no longer kept in ``streams``; it is the
# top of its events in the (stream_id, version) index, found by one index seek
# (SQLite's min/max optimisation, https://www.sqlite.org/optoverview.html#minmax).
# Updating a ``streams`` row per append dirtied, at 500 appends over 10k
# streams, nearly every page of that table in every batch: about as many WAL
# pages (written and fsynced at each COMMIT) as the events themselves.
# ``streams`` is now insert-only (name -> id). The category index served no
# query (read_all scans events and looks streams up by id) and cost a b-tree
# insert per new stream. DROP COLUMN needs SQLite >= 3.35
# (https://www.sqlite.org/lang_altertable.html#altertabdropcol).
_V2 = """
ALTER TABLE streams DROP COLUMN version;
DROP INDEX streams_category;
"""

MIGRATIONS: list[str] = [_V1, _V2]
"""Forward migration scripts; script ``i`` takes the schema from version ``i`` to ``i + 1``.

The schema version lives in ``PRAGMA user_version`` (0 for a new file).
Append new steps; never edit a released one.
"""

SCHEMA_VERSION = len(MIGRATIONS)


def connect_sync(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open a raw connection in autocommit mode (we issue BEGIN ourselves)."""
    # isolation_level=None: the sqlite3 module issues no implicit BEGIN, so
    # every transaction boundary is explicit. timeout= sets sqlite's busy
    # handler (https://www.sqlite.org/c3ref/busy_timeout.html).
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def read_pragmas(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, Any]:
    """``PRAGMA name`` for each name (checked to be identifiers); None for an unknown one."""
    values: dict[str, Any] = {}
    for name in names:
        row = conn.execute(f"PRAGMA {name}").fetchone()
        values[name] = None if row is None else row[0]
    return values


def configure(conn: sqlite3.Connection, durability: Durability, cache_kib: int) -> None:
    """Apply the per-connection pragmas every store connection uses."""
    # synchronous is per connection, not stored in the file.
    conn.execute(f"PRAGMA synchronous={durability.value}")
    conn.execute(f"PRAGMA cache_size=-{cache_kib}")  # negative: KiB, not pages
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA temp_store=MEMORY")


def migrate(conn: sqlite3.Connection) -> int:
    """Switch the file to WAL and apply pending migrations; return the schema version.

    Raises:
        StoreUnavailable: the file's schema is newer than this code knows.
    """
    # journal_mode=WAL is persistent in the file; readers then never block the
    # writer nor it them (https://www.sqlite.org/wal.html).
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreUnavailable(f"cannot switch the database to WAL mode (got {mode!r})")
    # BEGIN IMMEDIATE takes the write lock before reading user_version, so two
    # processes opening a new file at once cannot both run a migration step.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database schema version is {version}, newer than this code "
                f"supports ({SCHEMA_VERSION}); upgrade actorsourcing to open it"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
