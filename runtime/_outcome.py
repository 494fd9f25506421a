"""What ``ask`` returns (:class:`Outcome`) and what ``tell`` loses (:class:`DeadLetter`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stores import NewEvent, RecordedEvent

__all__ = ["DeadLetter", "Outcome"]

# The options the stores encode with (stores/_codec.py), so an outcome's event
# data matches what a read of the log returns.
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
_FIELDS = ("address", "events", "version", "positions", "value", "duplicate")


class Outcome:
    """The result of a command, delivered after its events were committed.

    Immutable. ``events`` of a command that just ran is built on first access
    (from the events the handler decided, as a read of the log would return
    them): callers that only look at ``version`` or ``value`` never pay for it.

    Attributes:
        address: The actor that ran it (an :class:`~runtime.Address`).
        events: The recorded events, in order (empty when the handler decided none).
        version: The stream version after the command.
        positions: The global positions of ``events`` (empty range when none).
        value: The handler's :class:`~aggregates.Reply` value, or ``None``.
        duplicate: ``True`` when the command id was already recorded: this is
            the original outcome, read back from the store; nothing ran or was written.
    """

    # Private slots behind read-only properties (setting a property without a
    # setter raises AttributeError): building one on the hot path is plain slot
    # stores, where a frozen dataclass pays an object.__setattr__ call per field.
    __slots__ = (
        "_address",
        "_at",
        "_duplicate",
        "_events",
        "_new",
        "_positions",
        "_stream",
        "_value",
        "_version",
    )
    __match_args__ = ("address", "events", "version", "positions", "value", "duplicate")

    _address: Any
    _events: tuple[RecordedEvent, ...] | None
    _version: int
    _positions: range
    _value: Any
    _duplicate: bool
    # Until ``events`` is first read: what it is built from (three slots, not a
    # tuple: one object fewer per command for the cyclic GC to track).
    _stream: str
    _new: Sequence[NewEvent]
    _at: datetime | float

    def __init__(
        self,
        address: Any,
        events: tuple[RecordedEvent, ...],
        version: int,
        positions: range,
        value: Any = None,
        duplicate: bool = False,
    ) -> None:
        self._address = address
        self._events = tuple(events)
        self._version = version
        self._positions = positions
        self._value = value
        self._duplicate = duplicate

    @classmethod
    def _committed(
        cls,
        address: Any,
        stream: str,
        new: Sequence[NewEvent],
        version: int,
        positions: range,
        value: Any,
        recorded_at: datetime | float,
    ) -> Outcome:
        """The outcome of events just appended; ``events`` is built when first read.

        ``recorded_at`` is the store's commit time, or a ``time.time()`` value
        taken at the reply when the store does not report one.
        """
        self = cls.__new__(cls)
        self._address = address
        self._events = None
        self._version = version
        self._positions = positions
        self._value = value
        self._duplicate = False
        self._stream = stream
        self._new = new
        self._at = recorded_at
        return self

    @property
    def address(self) -> Any:
        """The actor that ran the command."""
        return self._address

    @property
    def events(self) -> tuple[RecordedEvent, ...]:
        """The recorded events, in order."""
        events = self._events
        if events is None:
            events = _recorded(self._stream, self._new, self._at, self._positions, self._version)
            self._events = events
            del self._new  # the NewEvents are no longer needed
        return events

    @property
    def version(self) -> int:
        """The stream version after the command."""
        return self._version

    @property
    def positions(self) -> range:
        """The global positions of ``events``."""
        return self._positions

    @property
    def value(self) -> Any:
        """The handler's reply value, or ``None``."""
        return self._value

    @property
    def duplicate(self) -> bool:
        """Whether this is the original outcome of an already recorded command id."""
        return self._duplicate

    def _fields(self) -> tuple[Any, ...]:
        return (
            self._address,
            self.events,
            self._version,
            self._positions,
            self._value,
            self._duplicate,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Outcome:
            return NotImplemented
        assert isinstance(other, Outcome)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in zip(_FIELDS, self._fields(), strict=True))
        return f"Outcome({args})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Outcome, self._fields())


def _recorded(
    stream: str,
    new: Sequence[NewEvent],
    recorded_at: datetime | float,
    positions: range,
    version: int,
) -> tuple[RecordedEvent, ...]:
    at = (
        recorded_at
        if isinstance(recorded_at, datetime)
        else datetime.fromtimestamp(recorded_at, UTC)
    )
    first_version = version - len(new) + 1
    first = positions.start
    loads, dumps = orjson.loads, orjson.dumps
    return tuple(
        RecordedEvent(
            first + i,
            stream,
            first_version + i,
            ev.type,
            loads(dumps(ev.data, option=_JSON_OPTS)),
            dict(ev.metadata) if ev.metadata else {},
            ev.schema_version,
            ev.event_id or "",
            at,
        )
        for i, ev in enumerate(new)
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A ``tell`` whose command failed or was never accepted (nobody was waiting for it).

    Attributes:
        address: The target address.
        command: The command.
        error: The exception it failed with.
        command_id: Its command id, if any.
        at: When it failed (UTC).
    """

    address: Any
    command: Any
    error: BaseException
    command_id: str | None
    at: datetime
