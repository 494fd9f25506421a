"""Value types shared by every event store backend."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "ANY",
    "AppendResult",
    "CommandRecord",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StoreStatistics",
    "category_of",
]


class _AnyVersion(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyVersion.ANY
"""Pass as ``expected_version`` to append without a version check."""

ExpectedVersion: TypeAlias = int | Literal[_AnyVersion.ANY]
"""A stream version to check (``0``: the stream must not exist) or :data:`ANY`."""


def category_of(stream: str) -> str:
    """Return a stream's category: the part of ``"{Category}-{id}"`` before the first dash."""
    return stream.partition("-")[0]


@dataclass(frozen=True, slots=True, init=False)
class NewEvent:
    """An event to append, before the store assigns its version and position.

    Attributes:
        type: Stable type name (the event registry's name, e.g. ``"Account.Deposited"``).
        data: The payload: anything orjson encodes natively (a dict, a dataclass
            instance, ...). Encoded once, in the caller's task, before the append
            reaches the writer, so an unencodable event fails alone.
        metadata: Correlation id, causation id, command id and any user keys.
        schema_version: The payload's schema version (for upcasting on read).
        event_id: A unique id; the store generates a UUID when ``None``.
    """

    type: str
    data: Any
    metadata: Mapping[str, Any] | None = None
    schema_version: int = 1
    event_id: str | None = None

    def __init__(
        self,
        type: str,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
        schema_version: int = 1,
        event_id: str | None = None,
    ) -> None:
        # The generated frozen __init__ sets each field through
        # object.__setattr__; the slots' member descriptors do the same in
        # under half the time (about 0.8 us less per event, and the runtime
        # builds one NewEvent per recorded event). The instance is just as
        # frozen: only its __setattr__ refuses.
        _set_type(self, type)
        _set_data(self, data)
        _set_metadata(self, metadata)
        _set_schema_version(self, schema_version)
        _set_event_id(self, event_id)


_NEW_EVENT_FIELDS = ("type", "data", "metadata", "schema_version", "event_id")
if tuple(f.name for f in fields(NewEvent)) != _NEW_EVENT_FIELDS:  # pragma: no cover
    raise RuntimeError("NewEvent's fields changed: update NewEvent.__init__")
_set_type, _set_data, _set_metadata, _set_schema_version, _set_event_id = (
    NewEvent.__dict__[name].__set__ for name in _NEW_EVENT_FIELDS
)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored in the log.

    Attributes:
        position: Global position: starts at 1, strictly increasing in commit order.
        stream: Stream name, ``"{Category}-{id}"``.
        version: Version within the stream; the first event of a stream is 1.
        type: Stable type name.
        data: The decoded JSON payload, at the schema version it was stored with.
        metadata: The decoded JSON metadata.
        schema_version: The payload's schema version.
        event_id: Unique event id.
        recorded_at: Commit-time timestamp (UTC).
    """

    position: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    schema_version: int
    event_id: str
    recorded_at: datetime

    @property
    def category(self) -> str:
        """The stream's category."""
        return category_of(self.stream)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did.

    Attributes:
        stream: The stream appended to.
        version: The stream's version after the append.
        positions: The global positions assigned, in order (contiguous; empty
            for an empty append).
        recorded_at: The commit timestamp (UTC) the events were stored with,
            equal to their ``RecordedEvent.recorded_at``; ``None`` for an
            empty append (nothing was recorded).
    """

    stream: str
    version: int
    positions: range
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """The recorded outcome of a command id (stored in the append's transaction).

    Attributes:
        command_id: The command id.
        stream: The stream its events went to.
        version: The stream version after its events.
        positions: The global positions of its events.
        reply: The JSON reply value stored with it (``None`` if none).
    """

    command_id: str
    stream: str
    version: int
    positions: range
    reply: Any = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A saved aggregate state.

    Attributes:
        stream: The stream it summarises.
        version: The stream version it includes (events 1..version).
        state: The decoded JSON state.
        schema_version: The state's schema version; callers ignore a mismatch.
        recorded_at: When it was saved (UTC).
    """

    stream: str
    version: int
    state: Any
    schema_version: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """An immutable snapshot of a store's counters.

    Attributes:
        appends: Appends committed (each one call of ``append`` with events).
        events: Events committed.
        batches: Write transactions committed (group commit: many appends each).
        conflicts: Appends rejected with ``ConcurrencyError``.
        max_batch: Most appends seen in one transaction.
        batch_sizes: Histogram of appends per transaction, as ``{size: count}``
            bucketed by powers of two (1, 2, 4, ...).
    """

    appends: int = 0
    events: int = 0
    batches: int = 0
    conflicts: int = 0
    max_batch: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=dict)
