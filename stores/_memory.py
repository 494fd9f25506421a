"""The in-memory event store: the contract's reference backend, for tests and examples."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from stores._base import DEFAULT_PAGE_SIZE, ConsumerTransaction, EventStore
from stores._codec import (
    DEFAULT_MAX_EVENT_BYTES,
    check_append_args,
    check_checkpoint,
    check_snapshot_args,
    decode,
    encode_events,
    encode_value,
    validate_stream,
)
from stores._counters import BatchCounters
from stores._errors import ConcurrencyError, DuplicateCommand, StoreClosed
from stores._types import (
    ANY,
    AppendResult,
    CommandRecord,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreStatistics,
    category_of,
)

__all__ = ["MemoryStore"]


class _MemoryConsumerTransaction(ConsumerTransaction):
    """A consumer transaction over a private copy of the consumer's dict."""

    def __init__(self, data: dict[str, Any], checkpoint: int) -> None:
        self._data = data
        self._checkpoint = checkpoint

    @property
    def connection(self) -> dict[str, Any]:
        """The consumer's read-model dict (a copy, kept only if the block succeeds)."""
        return self._data

    @property
    def checkpoint(self) -> int:
        """The checkpoint as seen inside this transaction (including its own moves)."""
        return self._checkpoint

    async def set_checkpoint(self, position: int) -> None:
        """Move the checkpoint forward inside this transaction (backwards is ignored)."""
        if position > self._checkpoint:
            self._checkpoint = position


class MemoryStore(EventStore):
    """An event store that keeps everything in lists and dicts of this process.

    It validates and encodes through the same codec as the database backends
    (so serialisation errors, payload limits and stream names behave the same)
    and keeps the *decoded* JSON, so it returns what a real store would (a
    tuple comes back as a list). Every append is its own transaction: the
    statistics count one batch per append.

    Events returned by reads are shared with the store, not copied: do not
    mutate their ``data`` or ``metadata``.

    The consumer transaction's :attr:`~ConsumerTransaction.connection` is a
    plain ``dict`` private to the consumer name. The block gets a deep copy;
    the copy replaces the stored dict (with the checkpoint) only when the
    block exits normally, so an exception leaves both untouched. Transactions
    of one consumer name run one at a time, like a database write lock.
    :meth:`consumer_data` reads the committed dict. The copy costs time in
    proportion to the dict's size, so apply events in batches per transaction.

    Args:
        max_event_bytes: The largest encoded event (data plus metadata) accepted.
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        super().__init__()
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be a positive int, not {max_event_bytes!r}")
        self._max_event_bytes = max_event_bytes
        self._state = "new"  # new -> open -> closed
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._commands: dict[str, CommandRecord] = {}
        self._snapshots: dict[str, dict[int, Snapshot]] = {}
        self._checkpoints: dict[str, int] = {}
        self._consumer_data: dict[str, dict[str, Any]] = {}
        self._consumer_locks: dict[str, anyio.Lock] = {}
        self._counters = BatchCounters()

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Mark the store open (there is nothing to connect to).

        Raises:
            StoreClosed: the store was already closed.
        """
        if self._state == "closed":
            raise StoreClosed("the memory store was closed and cannot be reopened")
        self._state = "open"

    async def aclose(self) -> None:
        """Close the store; later calls raise StoreClosed. Idempotent."""
        self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosed(
                "the memory store is closed"
                if self._state == "closed"
                else "the memory store is not open (use `async with MemoryStore() as store`)"
            )

    # -- writing -----------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        """Append events to a stream atomically (see :meth:`EventStore.append`).

        A command id already recorded raises DuplicateCommand before the
        version is checked, so a retried command learns its first outcome.
        """
        # A cancellation point, like a real store's await on its writer.
        await anyio.lowlevel.checkpoint()
        return self._append_now(stream, events, expected_version, command_id, reply)

    def start_append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> asyncio.Future[AppendResult]:
        """Append now and return a done future (see :meth:`EventStore.start_append`).

        Bad input raises here; a conflict or repeated command id fails the future.
        """
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._append_now(stream, events, expected_version, command_id, reply))
        except (ConcurrencyError, DuplicateCommand) as exc:
            future.set_exception(exc)
        return future

    def _append_now(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        command_id: str | None,
        reply: Any,
    ) -> AppendResult:
        self._check_open()
        validate_stream(stream)
        # The database backends' check, so bad arguments raise the same TypeError
        # everywhere (a negative version is bad input, not a version conflict).
        check_append_args(expected_version, command_id)
        current = len(self._streams.get(stream, ()))
        if not events:
            return AppendResult(stream, current, range(len(self._log) + 1, len(self._log) + 1))
        encoded = encode_events(events, self._max_event_bytes)
        reply_value = (  # stored only with a command id, as on every backend
            None
            if reply is None or command_id is None
            else decode(encode_value(reply, "command reply"))
        )
        if command_id is not None and command_id in self._commands:
            raise DuplicateCommand(command_id, self._commands[command_id])
        if expected_version is not ANY and expected_version != current:
            self._counters.conflicts += 1
            raise ConcurrencyError(stream, expected_version, current)

        # No await from here to the end: the append is atomic on the event loop.
        recorded_at = datetime.now(UTC)
        first = len(self._log) + 1
        recorded = [
            RecordedEvent(
                position=first + i,
                stream=stream,
                version=current + 1 + i,
                type=type_,
                data=decode(data),
                metadata=decode(metadata),
                schema_version=schema_version,
                event_id=event_id,
                recorded_at=recorded_at,
            )
            for i, (type_, data, metadata, schema_version, event_id) in enumerate(encoded)
        ]
        self._log.extend(recorded)
        self._streams.setdefault(stream, []).extend(recorded)
        version = current + len(recorded)
        positions = range(first, first + len(recorded))
        if command_id is not None:
            self._commands[command_id] = CommandRecord(
                command_id, stream, version, positions, reply_value
            )
        self._counters.committed(1, len(recorded))
        self._announce(recorded)
        return AppendResult(stream, version, positions, recorded_at)

    # -- reading -----------------------------------------------------------

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
        await anyio.lowlevel.checkpoint()
        self._check_open()
        validate_stream(stream)
        events = self._streams.get(stream, [])
        # Versions are 1..n, so version v sits at index v - 1.
        start = max(from_version, 1) - 1
        stop = len(events) if to_version is None else max(min(to_version, len(events)), 0)
        selected = events[start:stop]
        if backwards:
            selected.reverse()
        if limit is not None:
            selected = selected[: max(limit, 0)]
        return selected

    async def read_all(
        self,
        after: int = 0,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[RecordedEvent]:
        """Read events after a position, filtered (see :meth:`EventStore.read_all`)."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return []
        # Positions are 1..n, so the first event after `after` sits at index `after`.
        start = max(after, 0)
        if types is None and categories is None:
            return self._log[start : start + limit]
        type_set = None if types is None else set(types)
        category_set = None if categories is None else set(categories)
        out: list[RecordedEvent] = []
        for event in self._log[start:]:
            if type_set is not None and event.type not in type_set:
                continue
            if category_set is not None and category_of(event.stream) not in category_set:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

    async def head(self) -> int:
        """The last committed global position (0 when the log is empty)."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        return len(self._log)

    async def stream_version(self, stream: str) -> int:
        """A stream's current version (0 when missing)."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        validate_stream(stream)
        return len(self._streams.get(stream, ()))

    async def find_command(self, command_id: str) -> CommandRecord | None:
        """The recorded outcome of a command id, or None."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        return self._commands.get(command_id)

    # -- snapshots ---------------------------------------------------------

    async def save_snapshot(
        self, stream: str, version: int, state: Any, schema_version: int = 1
    ) -> None:
        """Save a snapshot of a stream at a version (same version overwrites).

        Raises:
            SerializationError: the state cannot be encoded.
        """
        await anyio.lowlevel.checkpoint()
        self._check_open()
        validate_stream(stream)
        check_snapshot_args(version, schema_version)
        decoded = decode(encode_value(state, f"snapshot state of {stream!r}"))
        self._snapshots.setdefault(stream, {})[version] = Snapshot(
            stream, version, decoded, schema_version, datetime.now(UTC)
        )

    async def load_snapshot(self, stream: str, max_version: int | None = None) -> Snapshot | None:
        """The latest snapshot at or below ``max_version`` (any when None), or None."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        validate_stream(stream)
        saved = self._snapshots.get(stream)
        if not saved:
            return None
        versions = [v for v in saved if max_version is None or v <= max_version]
        return saved[max(versions)] if versions else None

    # -- consumers ---------------------------------------------------------

    async def get_checkpoint(self, name: str) -> int:
        """A consumer's checkpoint (0 when new)."""
        check_checkpoint(name)
        await anyio.lowlevel.checkpoint()
        self._check_open()
        return self._checkpoints.get(name, 0)

    async def set_checkpoint(self, name: str, position: int) -> None:
        """Move a checkpoint forward; a position at or below it is ignored."""
        check_checkpoint(name, position)
        await anyio.lowlevel.checkpoint()
        self._check_open()
        if position > self._checkpoints.get(name, 0):
            self._checkpoints[name] = position

    async def reset_checkpoint(self, name: str, position: int = 0) -> None:
        """Set a checkpoint to ``position``, backwards too."""
        check_checkpoint(name, position)
        await anyio.lowlevel.checkpoint()
        self._check_open()
        self._checkpoints[name] = position

    def open_consumer_transaction(
        self, name: str
    ) -> AbstractAsyncContextManager[ConsumerTransaction]:
        """Open a transaction over the consumer's dict and checkpoint (see the class doc)."""
        check_checkpoint(name)
        return self._consumer_transaction(name)

    @asynccontextmanager
    async def _consumer_transaction(self, name: str) -> AsyncIterator[ConsumerTransaction]:
        self._check_open()
        lock = self._consumer_locks.setdefault(name, anyio.Lock())
        async with lock:
            self._check_open()
            tx = _MemoryConsumerTransaction(
                copy.deepcopy(self._consumer_data.get(name, {})), self._checkpoints.get(name, 0)
            )
            yield tx
            # Reached only when the block exited normally: commit both together.
            self._check_open()
            self._consumer_data[name] = tx.connection
            if tx.checkpoint > self._checkpoints.get(name, 0):
                self._checkpoints[name] = tx.checkpoint

    def consumer_data(self, name: str) -> dict[str, Any]:
        """A deep copy of the dict the consumer ``name`` committed (empty when none)."""
        return copy.deepcopy(self._consumer_data.get(name, {}))

    # -- operations --------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        """The store's counters; each append is one batch of one."""
        return self._counters.snapshot()
