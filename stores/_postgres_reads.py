"""The event reads of :class:`stores.PostgresStore`, as a mixin.

Every query here goes through the store's one read boundary, ``_call``
(retry once on a lost connection, driver errors translated to
``StoreUnavailable``), which stays in ``_postgres`` with the lifecycle it
depends on; the mixin only declares it for the type checker.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

# orjson.loads itself, not the codec's one-line ``decode`` wrapper: it runs
# once per event of every replay.
from orjson import loads

from stores._base import DEFAULT_PAGE_SIZE
from stores._codec import check_text, split_replay_rows, validate_stream
from stores._postgres_batch import command_from_row, event_from_row
from stores._postgres_sql import Statements
from stores._types import CommandRecord, RecordedEvent, Snapshot

if TYPE_CHECKING:
    import asyncpg

    from stores._postgres_listen import HeadWatcher

__all__ = ["PostgresReads"]

_NO_TOP = 2**62
"""The upper version bound when a read has none (versions are bigint)."""


def _as_is(at: datetime) -> datetime:
    return at  # asyncpg returns timestamptz as an aware datetime


class PostgresReads:
    """Reading events, the head, stream versions and command outcomes.

    Mixed into :class:`stores.PostgresStore` ahead of ``EventStore``, so these
    methods implement the contract's abstract ones.
    """

    _sql: Statements
    _watcher: HeadWatcher | None

    if TYPE_CHECKING:
        # Provided by PostgresStore; declared here so the mixin type-checks.
        def _check_open(self) -> asyncpg.Pool: ...

        async def _call(self, method: str, query: str, *args: Any) -> Any: ...

    async def read_stream(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Read a stream's events in a version range (see :meth:`EventStore.read_stream`)."""
        self._check_open()
        validate_stream(stream)
        query = self._sql.read_stream_back if backwards else self._sql.read_stream_fwd
        top = _NO_TOP if to_version is None else to_version
        count = None if limit is None else max(limit, 0)  # LIMIT NULL: no limit
        rows = await self._call("fetch", query, stream, from_version, top, count)
        return [event_from_row(r) for r in rows]

    async def read_stream_payloads(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        limit: int | None = None,
    ) -> list[tuple[int, str, int, Any]]:
        """Read ``(version, type, schema_version, data)`` per event (see EventStore).

        Selects only those four columns and decodes only the data: the read
        an actor's activation replays.
        """
        self._check_open()
        validate_stream(stream)
        top = _NO_TOP if to_version is None else to_version
        count = None if limit is None else max(limit, 0)  # LIMIT NULL: no limit
        rows = await self._call("fetch", self._sql.read_payloads, stream, from_version, top, count)
        # An asyncpg Record unpacks like a tuple, in the statement's column order.
        return [(version, type_, sv, loads(data)) for version, type_, sv, data in rows]

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
            CorruptSnapshot: the snapshot's state cannot be decoded.
        """
        self._check_open()
        validate_stream(stream)
        top = _NO_TOP if to_version is None else to_version
        count = None if limit is None else max(limit, 0)  # LIMIT NULL: no limit
        rows = list(
            await self._call("fetch", self._sql.read_replay, stream, top, schema_version, count)
        )
        return split_replay_rows(stream, rows, _as_is)

    async def read_all(
        self,
        after: int = 0,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[RecordedEvent]:
        """Read events after a position, filtered (see :meth:`EventStore.read_all`)."""
        self._check_open()
        if limit <= 0:
            return []
        type_list = None if types is None else list(types)
        category_list = None if categories is None else list(categories)
        rows = await self._call("fetch", self._sql.read_all, after, limit, type_list, category_list)
        return [event_from_row(r) for r in rows]

    async def head(self) -> int:
        """The last committed global position (0 when the log is empty)."""
        return int(await self._call("fetchval", self._sql.head))

    async def stream_version(self, stream: str) -> int:
        """A stream's current version (0 when missing)."""
        self._check_open()
        validate_stream(stream)
        return int(await self._call("fetchval", self._sql.stream_version, stream) or 0)

    async def find_command(self, command_id: str) -> CommandRecord | None:
        """The recorded outcome of a command id, or None."""
        check_text(command_id, "command id")
        row = await self._call("fetchrow", self._sql.find_command, command_id)
        return None if row is None else command_from_row(row)

    # The timeout is part of the answer (the last head seen), not an error, so
    # a caller's fail_after would not fit.
    async def wait_for_head(self, after: int, timeout: float) -> int:  # noqa: ASYNC109
        """Wait until the head passes ``after`` (committed by any process), or ``timeout``.

        Woken by LISTEN/NOTIFY; re-reads the head every ``poll_interval``
        as a safety net for a missed notification (e.g. while reconnecting).
        While the LISTEN connection is up, repeated short waits (the event
        bus's pattern) run no query in between.

        Returns:
            The head: greater than ``after``, unless the timeout expired (then
            the last head seen, which may be stale by up to ``poll_interval``).
        """
        self._check_open()
        assert self._watcher is not None
        return await self._watcher.wait(after, timeout)
