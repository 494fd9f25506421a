"""Errors raised by event stores.

Driver errors (sqlite3, aiosqlite, asyncpg) are translated at one boundary in
each backend and chained (``raise ... from exc``)::

    ActorsourcingError                 (root, from aggregates)
    └── StoreError
        ├── ConcurrencyError           expected stream version did not match
        ├── DuplicateCommand           a command id was already recorded
        ├── SerializationError         an event/state orjson cannot encode
        ├── PayloadTooLarge            an encoded event over the size limit
        ├── InvalidStreamName          empty, too long, control characters
        ├── CorruptSnapshot            a stored snapshot cannot be decoded
        ├── StoreClosed                the store was closed
        └── StoreUnavailable           the database failed (driver error chained)

Reading an event whose schema version no class can upcast raises
``aggregates.UnknownSchemaVersion`` (re-exported here) from the registry that
decodes it.
"""

from __future__ import annotations

from typing import Any

from aggregates._errors import ActorsourcingError as ActorsourcingError
from aggregates._errors import UnknownSchemaVersion as UnknownSchemaVersion

__all__ = [
    "ActorsourcingError",
    "ConcurrencyError",
    "CorruptSnapshot",
    "DuplicateCommand",
    "InvalidStreamName",
    "PayloadTooLarge",
    "SerializationError",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "UnknownSchemaVersion",
]


class StoreError(ActorsourcingError):
    """Root of every error raised by an event store."""


class ConcurrencyError(StoreError):
    """An append's expected version did not match the stream; nothing was written.

    Attributes:
        stream: The stream appended to.
        expected: The version the caller expected (``-1`` for ``ANY``).
        actual: The stream's version at the time of the check.
    """

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, actual version {actual}")
        self.stream = stream
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stream, self.expected, self.actual))


class DuplicateCommand(StoreError):
    """An append carried a command id that is already recorded; nothing was written.

    Attributes:
        command_id: The duplicated id.
        record: The earlier :class:`~stores.CommandRecord`, when known.
    """

    def __init__(self, command_id: str, record: Any = None) -> None:
        super().__init__(f"command id {command_id!r} was already recorded")
        self.command_id = command_id
        self.record = record


class SerializationError(StoreError):
    """An event (or snapshot state) could not be encoded as JSON; nothing was written."""


class PayloadTooLarge(StoreError):
    """An encoded event is over the store's ``max_event_bytes``; nothing was written."""

    def __init__(self, type_name: str, size: int, limit: int) -> None:
        super().__init__(f"event {type_name!r} encodes to {size} bytes, over the limit of {limit}")
        self.type_name = type_name
        self.size = size
        self.limit = limit


class InvalidStreamName(StoreError, ValueError):
    """A stream name is empty, over 200 characters, or holds control characters."""


class CorruptSnapshot(StoreError):
    """A stored snapshot could not be decoded; callers ignore it and replay in full."""


class StoreClosed(StoreError):
    """The store is closed (or closing) and takes no more calls."""


class StoreUnavailable(StoreError):
    """The database failed underneath the store; the driver's error is chained."""
