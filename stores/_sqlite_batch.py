"""One group-commit batch of :class:`SQLiteStore`: one write transaction, run on a thread.

:func:`write_batch` is plain synchronous code the store's writer task runs on
a worker thread in ONE hop per batch: ``BEGIN IMMEDIATE``, one statement for
the head and the highest stream id, one for the versions of every stream in
the batch, one for already recorded command ids, three ``executemany`` calls
and ``COMMIT``. The number of statements is constant per batch, whatever
the number of appends in it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import orjson

from stores._codec import EncodedEvent
from stores._errors import ConcurrencyError, DuplicateCommand, StoreError, StoreUnavailable
from stores._types import AppendResult, CommandRecord, category_of

__all__ = ["ANY_VERSION", "AppendRequest", "is_busy", "write_batch"]

ANY_VERSION = -1
"""``expected`` of a request that skips the version check (``ANY``)."""

_HEAD = "SELECT (SELECT max(position) FROM events), (SELECT max(id) FROM streams)"
# json_each binds the whole name list as ONE parameter, so the statement text
# is the same for every batch (one cached prepared statement) and there is no
# bound-variable limit to split around.
# The versions come back as ONE JSON document (json_group_array): a single
# sqlite3_step, instead of one step (and one GIL release and re-take by the
# sqlite3 module) per row.
_VERSIONS = (
    "SELECT json_group_array(json_array(name, id, version)) FROM streams"
    " WHERE name IN (SELECT value FROM json_each(?))"
)
_COMMANDS = (
    "SELECT command_id, stream, version, first_position, last_position, reply"
    " FROM commands WHERE command_id IN (SELECT value FROM json_each(?))"
)
_UPSERT_STREAM = (
    "INSERT INTO streams (id, name, category, version) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET version = excluded.version"
)
_INSERT_EVENT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_COMMAND = "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?)"


class AppendRequest:
    """One caller's append, validated and encoded, waiting for the writer."""

    __slots__ = ("command_id", "events", "expected", "future", "outcome", "reply", "stream")

    def __init__(
        self,
        stream: str,
        events: list[EncodedEvent],
        expected: int,
        command_id: str | None,
        reply: bytes,
        future: asyncio.Future[AppendResult],
    ) -> None:
        self.stream = stream
        self.events = events
        self.expected = expected
        self.command_id = command_id
        self.reply = reply
        self.future = future
        self.outcome: AppendResult | StoreError | None = None


def _json_text(values: list[str]) -> str:
    # Bound as TEXT: from SQLite 3.45 a BLOB argument to a JSON function is
    # read as the binary JSONB format (https://www.sqlite.org/json1.html#jsonb).
    return orjson.dumps(values).decode()


def command_record(row: tuple[Any, ...]) -> CommandRecord:
    """Build a CommandRecord from a ``commands`` row."""
    command_id, stream, version, first, last, reply = row
    return CommandRecord(command_id, stream, version, range(first, last + 1), orjson.loads(reply))


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether a driver error means another connection holds a lock."""
    # SQLITE_BUSY (5) / SQLITE_LOCKED (6), extended codes in the high bits.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


def _attempt(conn: sqlite3.Connection, batch: list[AppendRequest]) -> int | None:
    """Run the batch's transaction once; set each request's outcome.

    Returns the commit timestamp, or None when nothing was written.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Stamped once the write lock is ours, so recorded_at follows
        # position order (as far as the wall clock does).
        now_us = time.time_ns() // 1000
        # Read the head and versions INSIDE the write transaction: another
        # process may have written since our last batch.
        head, max_id = conn.execute(_HEAD).fetchone()
        position = head or 0
        next_id = max_id or 0
        names = list(dict.fromkeys(r.stream for r in batch))
        (found,) = conn.execute(_VERSIONS, (_json_text(names),)).fetchone()
        known: dict[str, list[int]] = {
            name: [sid, version] for name, sid, version in orjson.loads(found)
        }
        command_ids = [r.command_id for r in batch if r.command_id is not None]
        recorded: dict[str, CommandRecord] = {}
        if command_ids:
            for row in conn.execute(_COMMANDS, (_json_text(command_ids),)):
                recorded[row[0]] = command_record(row)
        touched: dict[str, list[int]] = {}
        event_rows: list[tuple[Any, ...]] = []
        command_rows: list[tuple[Any, ...]] = []
        for req in batch:
            cid = req.command_id
            if cid is not None and cid in recorded:
                req.outcome = DuplicateCommand(cid, recorded[cid])
                continue
            entry = known.get(req.stream)
            current = entry[1] if entry is not None else 0
            if req.expected != ANY_VERSION and req.expected != current:
                req.outcome = ConcurrencyError(req.stream, req.expected, current)
                continue
            if entry is None:
                next_id += 1
                entry = known[req.stream] = [next_id, 0]
            sid = entry[0]
            first = position + 1
            version = current
            for ev in req.events:
                position += 1
                version += 1
                event_rows.append(
                    (
                        position,
                        sid,
                        version,
                        ev.type,
                        ev.data,
                        ev.metadata,
                        ev.schema_version,
                        ev.event_id,
                        now_us,
                    )
                )
            # Later appends to the same stream in this batch see this version.
            entry[1] = version
            touched[req.stream] = entry
            positions = range(first, position + 1)
            req.outcome = AppendResult(req.stream, version, positions)
            if cid is not None:
                command_rows.append((cid, req.stream, version, first, position, req.reply))
                recorded[cid] = CommandRecord(
                    cid, req.stream, version, positions, orjson.loads(req.reply)
                )
        if not event_rows:
            conn.execute("ROLLBACK")
            return None
        conn.executemany(
            _UPSERT_STREAM,
            [(e[0], name, category_of(name), e[1]) for name, e in touched.items()],
        )
        conn.executemany(_INSERT_EVENT, event_rows)
        if command_rows:
            conn.executemany(_INSERT_COMMAND, command_rows)
        conn.execute("COMMIT")
        return now_us
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_batch(
    conn: sqlite3.Connection, batch: list[AppendRequest], busy_timeout: float
) -> int | None:
    """Commit a batch of appends in one transaction (runs on a worker thread).

    Sets every request's ``outcome``: an AppendResult, or the ConcurrencyError
    / DuplicateCommand of an append that fails alone. Returns the commit's
    timestamp (microseconds since the epoch, UTC), or None when nothing of the
    batch was written.

    Raises:
        StoreUnavailable: the database stayed locked past ``busy_timeout`` or
            failed; nothing of the batch was committed.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        for req in batch:
            req.outcome = None
        try:
            return _attempt(conn, batch)
        except sqlite3.Error as exc:
            # sqlite's busy handler (PRAGMA busy_timeout) already waited inside
            # BEGIN IMMEDIATE; an SQLITE_BUSY that bypasses it (e.g. during WAL
            # recovery by another process) is retried until our own deadline.
            if is_busy(exc) and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
