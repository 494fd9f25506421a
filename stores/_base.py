"""The event store contract every backend implements."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import structlog

from stores._types import (
    AppendResult,
    CommandRecord,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreStatistics,
)

__all__ = ["CommitListener", "ConsumerTransaction", "EventStore"]

CommitListener = Callable[[Sequence[RecordedEvent]], None]
"""Called after each commit with the committed events, in position order."""

DEFAULT_PAGE_SIZE = 1000

_log = structlog.get_logger("stores")


class ConsumerTransaction(abc.ABC):
    """A transaction a consumer (projector) writes its read model and checkpoint in.

    Opened with :meth:`EventStore.open_consumer_transaction`. Everything done
    through :attr:`connection` and :meth:`set_checkpoint` commits together when
    the block exits normally and rolls back when it raises, which makes each
    event's effect on a read model in the same database exactly-once.
    """

    @property
    @abc.abstractmethod
    def connection(self) -> Any:
        """The backend's connection, inside the open transaction.

        ``aiosqlite.Connection`` for SQLite, ``asyncpg.Connection`` for
        PostgreSQL, a plain ``dict`` (committed on success) for the memory store.
        """

    @property
    @abc.abstractmethod
    def checkpoint(self) -> int:
        """The consumer's checkpoint as read inside this transaction."""

    @abc.abstractmethod
    async def set_checkpoint(self, position: int) -> None:
        """Move the checkpoint forward to ``position`` inside this transaction.

        A position at or below the current checkpoint is ignored.
        """


class EventStore(abc.ABC):
    """An append-only event log with streams, global order, snapshots and checkpoints.

    Semantics every backend keeps (the conformance suite in
    ``tests/test_store_contract.py`` pins them):

    * Streams are named ``"{Category}-{id}"``; a name is 1-200 printable
      characters. Stream versions start at 1.
    * :meth:`append` is atomic: all of a call's events are stored, or none.
      ``expected_version=0`` means "the stream must not exist yet"; ``ANY``
      skips the check. A mismatch raises ``ConcurrencyError(stream, expected,
      actual)`` and writes nothing. An empty ``events`` is a no-op: no
      version check, nothing recorded (not even ``command_id``).
    * Every event gets a global position, from 1, strictly increasing in
      commit order, with the positions of one append contiguous. A reader that
      has seen position *p* never later finds an unseen committed event below *p*.
    * Use as ``async with Store(...) as store:``; the store owns its
      background tasks (the group-commit writer) inside that block.
    * After each commit the store calls its commit listeners with the
      committed events in position order (the event bus's fast path). Events
      committed by other processes are not announced: readers poll the log.
    """

    def __init__(self) -> None:
        self._commit_listeners: list[CommitListener] = []

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener(events)`` after every commit of this store's own appends.

        The listener runs on the writer's task right after COMMIT, so it must
        return quickly and never block (hand events to a bounded buffer). An
        exception from it is logged and swallowed: the append already succeeded.

        Returns:
            A function that removes the listener.
        """
        self._commit_listeners.append(listener)

        def remove() -> None:
            if listener in self._commit_listeners:
                self._commit_listeners.remove(listener)

        return remove

    def _announce(self, events: Sequence[RecordedEvent]) -> None:
        """Hand committed events to every commit listener (backends call this)."""
        for listener in list(self._commit_listeners):
            try:
                listener(events)
            except Exception:
                _log.exception("commit listener failed", listener=repr(listener))

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and start background work. Called by ``__aenter__``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush pending appends, stop background work and release connections.

        Idempotent. Calls after it raise ``StoreClosed``.
        """

    # -- writing -----------------------------------------------------------

    @abc.abstractmethod
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        """Append events to a stream atomically.

        Args:
            stream: The stream name, ``"{Category}-{id}"``.
            events: The events, in order. Empty: nothing happens (no version
                check, ``command_id`` not recorded); the result carries the
                current version and no positions.
            expected_version: The stream's current version as the caller last
                saw it (``0``: must not exist), or ``ANY``.
            command_id: If given, recorded in the same transaction as the
                events, so a retried command can find its outcome
                (:meth:`find_command`), across restarts.
            reply: A JSON value stored with ``command_id`` (ignored without
                one: not encoded, so not checked either).

        Returns:
            The stream's new version and the global positions assigned.

        Raises:
            ConcurrencyError: ``expected_version`` did not match; nothing written.
            DuplicateCommand: ``command_id`` is already recorded; nothing written.
            SerializationError: an event cannot be encoded; nothing written.
            PayloadTooLarge: an event is over the size limit; nothing written.
            InvalidStreamName: the stream name is invalid.
            TypeError: ``expected_version`` is not an int >= 0 or ``ANY`` (a
                bool is not accepted), or ``command_id`` is not a str or None;
                checked even when ``events`` is empty; nothing written.
            StoreClosed: the store is closed.
        """

    def start_append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> asyncio.Future[AppendResult]:
        """Start :meth:`append` without a coroutine: a future of its result.

        For callers that want to go on with other work (the runtime's turns
        do): same arguments and semantics as :meth:`append`. Bad input and a
        closed store may raise here (nothing queued) or fail the future; a
        conflict or a repeated command id fails the future. Must be called
        on the event loop (in a task or callback). Cancelling the future
        only gives up on the answer, as cancelling an ``append`` does.

        The default wraps :meth:`append` in a task; ``SQLiteStore``,
        ``PostgresStore`` and ``MemoryStore`` validate and queue here, with no
        task.
        """
        return asyncio.ensure_future(
            self.append(stream, events, expected_version, command_id=command_id, reply=reply)
        )

    # -- reading -----------------------------------------------------------

    @abc.abstractmethod
    async def read_stream(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Read a stream's events with ``from_version <= version <= to_version``.

        Forwards the events come in ascending version order and ``limit``
        keeps the first ones; backwards, descending from the top of the range.
        A missing stream reads as an empty list.
        """

    async def read_stream_payloads(
        self,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        limit: int | None = None,
    ) -> list[tuple[int, str, int, Any]]:
        """Read what replaying a stream needs: ``(version, type, schema_version, data)`` tuples.

        The same events, in the same (ascending) order, as ``read_stream`` with
        the same arguments, minus the fields a replay does not use (position,
        metadata, event id, time). Backends override it with a leaner query;
        this default derives it from ``read_stream``.

        Args:
            stream: The stream name.
            from_version: The first version to read.
            to_version: The last version to read (``None``: the end of the stream).
            limit: Read at most this many events.

        Returns:
            One ``(version, type, schema_version, data)`` tuple per event.
        """
        return [
            (e.version, e.type, e.schema_version, e.data)
            for e in await self.read_stream(stream, from_version, to_version, limit=limit)
        ]

    @abc.abstractmethod
    async def read_all(
        self,
        after: int = 0,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[RecordedEvent]:
        """Read up to ``limit`` events with position > ``after``, in position order.

        ``types`` and ``categories`` filter; the events keep their original
        positions (so a filtered reader pages on the last position it got).
        """

    async def iter_all(
        self,
        after: int = 0,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Iterate every event after ``after`` up to the head, one page at a time."""
        while True:
            page = await self.read_all(after, page_size, types=types, categories=categories)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            after = page[-1].position

    @abc.abstractmethod
    async def head(self) -> int:
        """The last committed global position (0 when the log is empty)."""

    @abc.abstractmethod
    async def stream_version(self, stream: str) -> int:
        """A stream's current version (0 when missing), without reading its events."""

    @abc.abstractmethod
    async def find_command(self, command_id: str) -> CommandRecord | None:
        """The recorded outcome of a command id, or None."""

    # -- snapshots ---------------------------------------------------------

    @abc.abstractmethod
    async def save_snapshot(
        self, stream: str, version: int, state: Any, schema_version: int = 1
    ) -> None:
        """Save a state summarising events 1..version (same version overwrites).

        Raises:
            SerializationError: the state cannot be encoded.
        """

    @abc.abstractmethod
    async def load_snapshot(self, stream: str, max_version: int | None = None) -> Snapshot | None:
        """The latest snapshot at or below ``max_version`` (any when None), or None.

        Raises:
            CorruptSnapshot: the stored state cannot be decoded.
        """

    async def read_replay(
        self,
        stream: str,
        schema_version: int,
        to_version: int | None = None,
        *,
        limit: int | None = None,
    ) -> tuple[Snapshot | None, list[tuple[int, str, int, Any]]]:
        """What activating an aggregate reads: its newest snapshot, then the events after it.

        The snapshot is ``load_snapshot(stream, to_version)``. When there is
        one and its ``schema_version`` is ``schema_version``, the events are
        ``read_stream_payloads(stream, snapshot.version + 1, to_version,
        limit=limit)``; otherwise the same from version 1 (a snapshot of
        another schema version is returned but not used as the start).
        Backends override it to read both in one round trip; this default
        makes the two calls.

        Args:
            stream: The stream name.
            schema_version: The snapshot schema version the caller can use.
            to_version: Neither the snapshot nor the events go past this version.
            limit: Read at most this many events (the rest with
                ``read_stream_payloads``).

        Returns:
            ``(snapshot or None, [(version, type, schema_version, data), ...])``.

        Raises:
            CorruptSnapshot: the snapshot's state cannot be decoded (nothing
                else is returned: the caller reads the stream in full).
        """
        snapshot = await self.load_snapshot(stream, to_version)
        start = 1
        if snapshot is not None and snapshot.schema_version == schema_version:
            start = snapshot.version + 1
        return snapshot, await self.read_stream_payloads(stream, start, to_version, limit=limit)

    # -- consumers ---------------------------------------------------------

    @abc.abstractmethod
    async def get_checkpoint(self, name: str) -> int:
        """A consumer's checkpoint (last position it applied; 0 when new)."""

    @abc.abstractmethod
    async def set_checkpoint(self, name: str, position: int) -> None:
        """Move a checkpoint forward; a position at or below it is ignored."""

    @abc.abstractmethod
    async def reset_checkpoint(self, name: str, position: int = 0) -> None:
        """Set a checkpoint to ``position``, backwards too (for projector resets)."""

    @abc.abstractmethod
    def open_consumer_transaction(
        self, name: str
    ) -> AbstractAsyncContextManager[ConsumerTransaction]:
        """Open a transaction for a read model in this database plus its checkpoint."""

    # -- operations --------------------------------------------------------

    @abc.abstractmethod
    def statistics(self) -> StoreStatistics:
        """An immutable snapshot of the store's counters."""
