"""Value types of the read side: bus pages, failure policy, projector state, statistics."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stores import RecordedEvent

__all__ = [
    "BusStatistics",
    "FailurePolicy",
    "Page",
    "ParkedEvent",
    "ProjectorState",
    "ProjectorStatistics",
]


class FailurePolicy(enum.Enum):
    """What a projector does once its handler has failed on one event ``max_attempts`` times.

    Attributes:
        STOP: Stop before the event: the checkpoint stays just below it, the
            error shows in ``statistics()`` and is raised by ``wait_for``.
            ``resume()`` tries the event again (after a fix), ``reset()`` or a
            rebuild moves on.
        PARK: Record the event and the error in the projector's dead-letter
            table (in the same transaction that moves the checkpoint past it,
            for SQLite read models) and go on. ``parked()`` lists them,
            ``retry_parked()`` applies them again.
    """

    STOP = "stop"
    PARK = "park"


class ProjectorState(enum.Enum):
    """Where a projector is in its life.

    Attributes:
        NEW: Not started yet (not in a running engine).
        RUNNING: Applying events (catching up or following the live feed).
        PAUSED: Paused by ``pause()``; ``resume()`` goes on.
        FAILED: Stopped on an event by the STOP policy.
        STOPPED: Its engine has stopped.
    """

    NEW = "new"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ProjectorStatistics:
    """An immutable snapshot of one projector's progress.

    Attributes:
        name: The projector's name.
        state: Its state.
        position: The position its read model reflects (checkpoint, including
            unwanted events passed over but not yet written down).
        checkpoint: The checkpoint last made durable.
        head: The highest position the bus knows to be committed.
        lag_events: ``head - position``: positions not yet reflected.
        lag_seconds: Event-time lag: the commit time of the newest event the
            bus has announced minus that of the last event applied (0 when
            caught up). Approximate.
        events_handled: Events passed to the handler and committed since start.
        batches: Batches committed since start.
        retries: Handler retries since start.
        parked: Events parked since start.
        live: True when following the live feed, False when reading the log.
        error: The failure that stopped it (FAILED state), as text.
    """

    name: str
    state: ProjectorState
    position: int
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float
    events_handled: int
    batches: int
    retries: int
    parked: int
    live: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projector gave up on under the PARK policy.

    Attributes:
        position: Its global position.
        event_id: Its event id.
        stream: Its stream.
        type: Its type name.
        error: The handler's last error, as ``"Type: message"``.
        attempts: How many times the handler was tried.
        parked_at: When it was parked (UTC).
    """

    position: int
    event_id: str
    stream: str
    type: str
    error: str
    attempts: int
    parked_at: datetime


@dataclass(frozen=True, slots=True)
class Page:
    """One delivery from a subscription.

    Attributes:
        events: The wanted events, in position order (may be empty).
        position: Every event at or below this position was considered: the
            wanted ones are in this page or an earlier one. A consumer may
            checkpoint here, which is how a filtered consumer's checkpoint
            moves across long runs of unwanted events.
        live: The page came from the live feed (just committed), not from
            reading the log.
    """

    events: Sequence[RecordedEvent]
    position: int
    live: bool = False


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """An immutable snapshot of the bus's counters.

    Attributes:
        head: The highest position the bus knows to be committed.
        subscribers: Open subscriptions.
        live: Of those, how many follow the live feed (the rest read the log).
        overflows: Times a subscriber's live buffer overflowed (switch to catch-up).
        gaps: Times a subscriber missed positions (another process wrote).
    """

    head: int
    subscribers: int
    live: int
    overflows: int
    gaps: int
