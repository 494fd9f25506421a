"""One group-commit batch of :class:`SQLiteStore`: one write transaction, run on a thread.

:func:`write_batch` is plain synchronous code the store's writer runs on a
worker thread (or in its writer process) in ONE hop per batch: ``BEGIN
IMMEDIATE``; one statement for the head and the highest stream id when the
connection's :class:`StreamCache` may still hold the streams' versions, and
one for the ids and versions of the streams it does not hold (all of them
when another writer has written since); one for already recorded command
ids (only when the batch carries some); multi-row INSERTs for new streams
(only when there are some) and for the events; an ``executemany`` for
command ids (only when there are some); and ``COMMIT``. The number of
statements does not grow with the number of appends, only with the log of
the number of rows (see ``_insert_chunked``).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

from stores._codec import EncodedEvent
from stores._errors import ConcurrencyError, DuplicateCommand, StoreError, StoreUnavailable
from stores._types import CommandRecord, category_of

__all__ = [
    "ANY_VERSION",
    "BatchItem",
    "BatchOutcome",
    "StreamCache",
    "is_busy",
    "write_batch",
]

ANY_VERSION = -1
"""``expected`` of a request that skips the version check (``ANY``)."""

# ONE statement (one sqlite3_step, so one GIL release and re-take by the
# sqlite3 module) reads the head, the highest stream id and the id and
# version of every stream in the batch that the StreamCache does not hold.
# json_each binds the whole name list as ONE parameter, so the statement text
# is the same for every batch (one cached prepared statement) and there is no
# bound-variable limit to split around; the names, ids and versions come back
# as three JSON arrays in one row, so no Python object is built per stream
# beyond the cache's entries. A stream's version is the top of its events in
# the (stream_id, version) index: one index seek
# (https://www.sqlite.org/optoverview.html#minmax).
_STATE = (
    "SELECT (SELECT max(position) FROM events), (SELECT max(id) FROM streams),"
    " json_group_array(s.name), json_group_array(s.id),"
    " json_group_array(coalesce("
    "(SELECT max(e.version) FROM events e WHERE e.stream_id = s.id), 0))"
    " FROM streams s WHERE s.name IN (SELECT value FROM json_each(?))"
)
# The same for a batch of one stream (every batch of a lone caller): a plain
# parameter instead of a JSON list, ~half the time of the statement above.
# The LEFT JOIN gives one row for a stream that does not exist yet (id NULL).
_STATE_ONE = (
    "SELECT (SELECT max(position) FROM events), (SELECT max(id) FROM streams), s.id,"
    " (SELECT max(e.version) FROM events e WHERE e.stream_id = s.id)"
    " FROM (SELECT 1) LEFT JOIN streams s ON s.name = ?"
)
# The head and the highest stream id alone: two index seeks. When the
# StreamCache holds every stream of a batch, it is all the batch reads of the
# streams before deciding its appends (its command ids aside).
_HEAD = "SELECT (SELECT max(position) FROM events), (SELECT max(id) FROM streams)"
_COMMANDS = (
    "SELECT command_id, stream, version, first_position, last_position, reply"
    " FROM commands WHERE command_id IN (SELECT value FROM json_each(?))"
)
_INSERT_COMMAND = "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?)"

# Rows go in with multi-row INSERT ... VALUES statements, not executemany:
# executemany steps once per row, and the sqlite3 module releases and
# re-takes the GIL around every step, which costs CPU and, whenever the event
# loop's thread holds the GIL, waiting for it. The statements come in
# power-of-two sizes up to 512 rows (largest first), so n rows take at most
# n // 512 + 9 statements, and the texts stay few: each is prepared once and then served
# from the connection's statement cache (128 entries by default). The
# largest size keeps the bound variables within the library's limit
# (32,766 since SQLite 3.32, 999 before:
# https://www.sqlite.org/limits.html#max_variable_number).
_EVENT_COLS = 9
_STREAM_COLS = 3


def _chunk_sizes(width: int) -> tuple[int, ...]:
    probe = sqlite3.connect(":memory:")
    try:
        limit = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()
    largest = 512
    while largest > 1 and largest * width > limit:
        largest //= 2
    return tuple(1 << i for i in range(largest.bit_length() - 1, -1, -1))


def _statements(head: str, width: int) -> list[tuple[int, str]]:
    row = "(" + ", ".join(["?"] * width) + ")"
    return [(n, head + ",".join([row] * n)) for n in _chunk_sizes(width)]


_INSERT_EVENTS = _statements("INSERT INTO events VALUES ", _EVENT_COLS)
_INSERT_STREAMS = _statements("INSERT INTO streams (id, name, category) VALUES ", _STREAM_COLS)


def _insert_chunked(
    conn: sqlite3.Connection, statements: list[tuple[int, str]], width: int, flat: list[Any]
) -> None:
    """Insert the rows laid end to end in ``flat`` (``width`` values each)."""
    start = 0
    left = len(flat) // width
    for size, sql in statements:
        while left >= size:
            step = size * width
            conn.execute(sql, flat[start : start + step])
            start += step
            left -= size


BatchItem = tuple[str, list[EncodedEvent], int, "str | None", bytes]
"""One append, validated and encoded, as the writer queues it and
:func:`write_batch` takes it: ``(stream, events, expected, command_id,
reply)`` (``expected`` is :data:`ANY_VERSION` for ``ANY``; ``reply`` the
command's reply as JSON). A plain tuple crosses to the writer process as it is."""

Result = int | StoreError | tuple[Any, ...]
"""One append's result from :func:`write_batch`: the stream's new version when
it committed, or the ConcurrencyError / DuplicateCommand it failed with alone
(the writer process sends those as tuples: see ``_sqlite_writer_child``)."""

BatchOutcome = tuple["int | None", int, list[Result]]
""":func:`write_batch`'s answer: ``(commit_us, first_position, results)``.
``commit_us`` is the COMMIT's timestamp (microseconds since the epoch, UTC), or
None when nothing was written; the committed appends hold consecutive
positions from ``first_position`` on, in batch order."""


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


STREAM_CACHE_LIMIT = 50_000
"""Streams a :class:`StreamCache` holds before it starts afresh (~250 bytes each)."""


class StreamCache:
    """The id and version of each stream a write connection has seen, as of ``head``.

    Positions strictly increase with every commit that writes events, and
    ``events`` and ``streams`` are insert-only (a stream row is written only
    with its first events), so while the log's head is still the ``head``
    this connection last committed (or read), nobody else has written events,
    and these entries are the database's (snapshots, checkpoints and read
    models written meanwhile do not matter). :func:`write_batch` checks that
    with one two-seek statement inside its write transaction (another
    process, or the store's other writer connection, may have written since)
    and reads only the streams it does not know; on any other head it starts
    afresh.
    A stream known not to exist has id 0. Entries written by a batch that
    then fails are dropped with everything else (:meth:`clear`). Before it
    would grow past ``limit`` streams it forgets its entries and reads the
    batch's streams again (a single batch may hold more than ``limit``).
    """

    __slots__ = ("head", "ids", "limit", "versions")

    def __init__(self, limit: int = STREAM_CACHE_LIMIT) -> None:
        self.limit = limit
        self.head: int | None = None  # None: nothing here can be trusted
        self.ids: dict[str, int] = {}
        self.versions: dict[str, int] = {}

    def clear(self) -> None:
        """Forget everything (the next batch reads every stream it touches)."""
        self.head = None
        self.ids.clear()
        self.versions.clear()


def _known_state(
    conn: sqlite3.Connection, names: dict[str, None], cache: StreamCache
) -> tuple[int, int]:
    """Fill ``cache`` with every stream in ``names``; return ``(head, max_id)``.

    Runs inside the batch's write transaction.
    """
    ids, versions = cache.ids, cache.versions
    if cache.head is not None:
        head, max_id = conn.execute(_HEAD).fetchone()
        if (head or 0) != cache.head:  # someone else wrote since: start afresh
            cache.clear()
    misses = [name for name in names if name not in ids] if ids else list(names)
    if len(ids) + len(misses) > cache.limit and ids:
        # Bounded here, before it grows: batches that commit nothing (every
        # append a conflict or a duplicate command) look streams up too.
        ids.clear()
        versions.clear()
        misses = list(names)
    if len(misses) == 1:
        (name,) = misses
        head, max_id, sid, top = conn.execute(_STATE_ONE, (name,)).fetchone()
        ids[name] = sid or 0
        versions[name] = top or 0
    elif misses:
        head, max_id, found_names, found_ids, found_versions = conn.execute(
            _STATE, (_json_text(misses),)
        ).fetchone()
        for name in misses:  # absent unless found below
            ids[name] = 0
            versions[name] = 0
        found = orjson.loads(found_names)
        ids.update(zip(found, orjson.loads(found_ids), strict=True))
        versions.update(zip(found, orjson.loads(found_versions), strict=True))
    cache.head = head or 0
    return head or 0, max_id or 0


def _attempt(conn: sqlite3.Connection, items: list[BatchItem], cache: StreamCache) -> BatchOutcome:
    """Run the batch's transaction once; see :func:`write_batch`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Stamped once the write lock is ours, so recorded_at follows
        # position order (as far as the wall clock does).
        now_us = time.time_ns() // 1000
        # The head and the streams' versions, checked or read INSIDE the write
        # transaction: another process may have written since our last batch.
        head, next_id = _known_state(conn, {item[0]: None for item in items}, cache)
        # Updated as the batch's appends are decided: a later append to the
        # same stream in this batch sees the version after the earlier one.
        ids, versions = cache.ids, cache.versions
        position = head
        command_ids = [item[3] for item in items if item[3] is not None]
        recorded: dict[str, CommandRecord] = {}
        if command_ids:
            for row in conn.execute(_COMMANDS, (_json_text(command_ids),)):
                recorded[row[0]] = command_record(row)
        new_streams: list[Any] = []
        event_values: list[Any] = []
        add_values = event_values.extend
        command_rows: list[tuple[Any, ...]] = []
        results: list[Result] = []
        add_result = results.append
        for stream, events, expected, cid, reply in items:
            if cid is not None and cid in recorded:
                add_result(DuplicateCommand(cid, recorded[cid]))
                continue
            version = versions.get(stream, 0)
            if expected != version and expected != ANY_VERSION:
                add_result(ConcurrencyError(stream, expected, version))
                continue
            sid = ids[stream]
            if not sid:
                next_id += 1
                sid = ids[stream] = next_id
                new_streams += (sid, stream, category_of(stream))
            first = position + 1
            for type_, data, metadata, schema_version, event_id in events:
                position += 1
                version += 1
                add_values(
                    (
                        position,
                        sid,
                        version,
                        type_,
                        data,
                        metadata,
                        schema_version,
                        event_id,
                        now_us,
                    )
                )
            versions[stream] = version
            add_result(version)
            if cid is not None:
                command_rows.append((cid, stream, version, first, position, reply))
                recorded[cid] = CommandRecord(
                    cid, stream, version, range(first, position + 1), orjson.loads(reply)
                )
        if not event_values:
            conn.execute("ROLLBACK")  # nothing written: the cache stays true as of head
            return None, head + 1, results
        if new_streams:
            _insert_chunked(conn, _INSERT_STREAMS, _STREAM_COLS, new_streams)
        _insert_chunked(conn, _INSERT_EVENTS, _EVENT_COLS, event_values)
        if command_rows:
            conn.executemany(_INSERT_COMMAND, command_rows)
        conn.execute("COMMIT")
        cache.head = position
        return now_us, head + 1, results
    except BaseException:
        # The cache may hold this batch's versions and stream ids: forget it.
        cache.clear()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_batch(
    conn: sqlite3.Connection, items: list[BatchItem], busy_timeout: float, cache: StreamCache
) -> BatchOutcome:
    """Commit a batch of appends in one transaction (on a worker thread or in the writer process).

    Returns ``(commit_us, first_position, results)`` (:data:`BatchOutcome`):
    one result per item, in order: the stream's new version for an append
    that committed, or the ConcurrencyError / DuplicateCommand of an append
    that fails alone. ``commit_us`` is None when nothing of the batch was
    written; :func:`~stores._sqlite_outcomes.outcomes` turns it into each
    append's AppendResult. ``cache`` is ``conn``'s own (one per write
    connection, kept between its batches).

    Raises:
        StoreUnavailable: the database stayed locked past ``busy_timeout`` or
            failed; nothing of the batch was committed.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return _attempt(conn, items, cache)
        except sqlite3.Error as exc:
            # sqlite's busy handler (PRAGMA busy_timeout) already waited inside
            # BEGIN IMMEDIATE; an SQLITE_BUSY that bypasses it (e.g. during WAL
            # recovery by another process) is retried until our own deadline.
            if is_busy(exc) and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
