"""The read side of :class:`SQLiteStore`: a reader-connection pool and the queries on it."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite
import orjson

from stores._base import DEFAULT_PAGE_SIZE
from stores._codec import check_checkpoint, decode_snapshot, split_replay_rows, validate_stream
from stores._errors import SerializationError, StoreUnavailable
from stores._sqlite_batch import command_record
from stores._sqlite_consumer import CHECKPOINT_SQL
from stores._sqlite_rows import decode_payload_rows, decode_rows, from_micros
from stores._types import CommandRecord, RecordedEvent, Snapshot

__all__ = ["VERSION_OF", "SQLiteReads"]

_EVENT_COLS = (
    "e.position, e.version, e.type, e.data, e.metadata, e.schema_version, e.event_id, e.recorded_at"
)
_STREAM_SQL = (
    f"SELECT {_EVENT_COLS} FROM events e"
    " WHERE e.stream_id = (SELECT id FROM streams WHERE name = ?)"
    " AND e.version >= ? AND e.version <= ? ORDER BY e.version {order} LIMIT ?"
)
_READ_STREAM = {False: _STREAM_SQL.format(order="ASC"), True: _STREAM_SQL.format(order="DESC")}
# Only the columns a replay uses: sqlite3 builds a Python object per column
# per row, and skipping metadata, event id, time and position (plus their
# decoding) roughly halves the cost of reading a long stream.
_READ_PAYLOADS = (
    "SELECT e.version, e.type, e.schema_version, e.data FROM events e"
    " WHERE e.stream_id = (SELECT id FROM streams WHERE name = ?)"
    " AND e.version >= ? AND e.version <= ? ORDER BY e.version ASC LIMIT ?"
)
# read_replay in ONE statement (one round trip to the reader thread): the
# newest snapshot at or below the bound (its row has a NULL type), then the
# events after it when its schema version is the caller's, else from
# version 1. Parameters: ?1 stream, ?2 top version, ?3 usable schema version,
# ?4 limit (-1: none).
_READ_REPLAY = (
    "WITH snap AS (SELECT version, state, schema_version, recorded_at FROM snapshots"
    " WHERE stream = ?1 AND version <= ?2 ORDER BY version DESC LIMIT 1)"
    " SELECT version, NULL, schema_version, state, recorded_at FROM snap"
    " UNION ALL SELECT * FROM (SELECT e.version, e.type, e.schema_version, e.data, NULL"
    " FROM events e WHERE e.stream_id = (SELECT id FROM streams WHERE name = ?1)"
    " AND e.version > coalesce((SELECT version FROM snap WHERE schema_version = ?3), 0)"
    " AND e.version <= ?2 ORDER BY e.version ASC LIMIT ?4)"
)
# A stream's version is the top of its events in the (stream_id, version)
# index (schema version 2 keeps no version column in streams).
VERSION_OF = (
    "coalesce((SELECT max(version) FROM events"
    " WHERE stream_id = (SELECT id FROM streams WHERE name = ?)), 0)"
)
_NO_TOP = 2**62


class SQLiteReads:
    """The reads of :class:`SQLiteStore`, mixed into it (a module of its own).

    Every read takes the next of the store's reader connections in turn, so
    reads never wait behind the writer's thread. The store owns the
    connections (opens and closes them); this class only declares what it uses.
    """

    _readers: list[aiosqlite.Connection]
    _reader_turn: int

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        self._check_open()
        conn = self._readers[self._reader_turn % len(self._readers)]
        self._reader_turn += 1
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
        except UnicodeEncodeError as exc:  # a lone surrogate in a name or id
            raise SerializationError(f"cannot send {params!r} to SQLite: {exc}") from exc
        except OverflowError as exc:  # a bound past SQLite's 64-bit integers
            raise ValueError(f"a read argument is out of range for SQLite: {params!r}") from exc

    async def read_stream(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Read a stream's events (see EventStore.read_stream)."""
        validate_stream(stream)
        if limit is not None and limit <= 0:
            return []
        top = _NO_TOP if to_version is None else to_version
        rows = await self._fetch(
            _READ_STREAM[backwards], (stream, from_version, top, -1 if limit is None else limit)
        )
        return decode_rows(rows, stream)

    async def read_stream_payloads(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        limit: int | None = None,
    ) -> list[tuple[int, str, int, Any]]:
        """Read ``(version, type, schema_version, data)`` per event (see EventStore)."""
        validate_stream(stream)
        if limit is not None and limit <= 0:
            return []
        top = _NO_TOP if to_version is None else to_version
        rows = await self._fetch(
            _READ_PAYLOADS, (stream, from_version, top, -1 if limit is None else limit)
        )
        return decode_payload_rows(rows)

    async def read_all(
        self,
        after: int = 0,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[RecordedEvent]:
        """Read events after a position, optionally filtered (see EventStore.read_all)."""
        if limit <= 0:
            return []
        # CROSS JOIN keeps events as the outer loop: a scan in position order
        # (SQLite never reorders the tables of a CROSS JOIN).
        sql = (
            "SELECT e.position, s.name, e.version, e.type, e.data, e.metadata,"
            " e.schema_version, e.event_id, e.recorded_at"
            " FROM events e CROSS JOIN streams s ON s.id = e.stream_id WHERE e.position > ?"
        )
        params: list[Any] = [after]
        if types is not None:
            sql += " AND e.type IN (SELECT value FROM json_each(?))"
            params.append(orjson.dumps(list(types)).decode())
        if categories is not None:
            sql += " AND s.category IN (SELECT value FROM json_each(?))"
            params.append(orjson.dumps(list(categories)).decode())
        sql += " ORDER BY e.position LIMIT ?"
        params.append(limit)
        return decode_rows(await self._fetch(sql, params), None)

    async def head(self) -> int:
        """The last committed global position (0 when the log is empty)."""
        rows = await self._fetch("SELECT max(position) FROM events", ())
        return int(rows[0][0] or 0)

    async def stream_version(self, stream: str) -> int:
        """A stream's current version (0 when missing): one index seek."""
        validate_stream(stream)
        rows = await self._fetch(f"SELECT {VERSION_OF}", (stream,))
        return int(rows[0][0])

    async def find_command(self, command_id: str) -> CommandRecord | None:
        """The recorded outcome of a command id, or None."""
        rows = await self._fetch(
            "SELECT command_id, stream, version, first_position, last_position, reply"
            " FROM commands WHERE command_id = ?",
            (command_id,),
        )
        return command_record(rows[0]) if rows else None

    async def load_snapshot(self, stream: str, max_version: int | None = None) -> Snapshot | None:
        """The latest snapshot at or below ``max_version`` (see EventStore).

        Raises:
            CorruptSnapshot: the stored state is not valid JSON.
        """
        validate_stream(stream)
        rows = await self._fetch(
            "SELECT version, state, schema_version, recorded_at FROM snapshots"
            " WHERE stream = ? AND version <= ? ORDER BY version DESC LIMIT 1",
            (stream, _NO_TOP if max_version is None else max_version),
        )
        if not rows:
            return None
        version, raw, schema_version, at = rows[0]
        return decode_snapshot(stream, version, raw, schema_version, from_micros(at))

    async def read_replay(
        self,
        stream: str,
        schema_version: int,
        to_version: int | None = None,
        *,
        limit: int | None = None,
    ) -> tuple[Snapshot | None, list[tuple[int, str, int, Any]]]:
        """The newest snapshot and the events after it, in one statement (see EventStore).

        Raises:
            CorruptSnapshot: the snapshot's state is not valid JSON.
        """
        validate_stream(stream)
        top = _NO_TOP if to_version is None else to_version
        if limit is not None and limit <= 0:
            return await self.load_snapshot(stream, to_version), []
        rows = await self._fetch(
            _READ_REPLAY, (stream, top, schema_version, -1 if limit is None else limit)
        )
        return split_replay_rows(stream, rows, from_micros)

    async def get_checkpoint(self, name: str) -> int:
        """A consumer's checkpoint (0 when new)."""
        check_checkpoint(name)
        rows = await self._fetch(CHECKPOINT_SQL, (name,))
        return int(rows[0][0]) if rows else 0
