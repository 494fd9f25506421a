"""Temporal queries: an aggregate's past state, rebuilt beside the live actor."""

from __future__ import annotations

from datetime import datetime

from aggregates import Aggregate, EventRegistry
from runtime._actor import catch_up, load_snapshot_state, rebuild
from runtime._address import Address
from runtime._errors import InvalidArgument
from stores import EventStore

__all__ = ["check_bounds", "load_state"]


def check_bounds(at_version: int | None, at_time: datetime | None) -> None:
    """Validate a load's bounds (before anything is read).

    Raises:
        InvalidArgument: both given, a version not an int >= 0, or a naive datetime.
    """
    if at_version is not None and at_time is not None:
        raise InvalidArgument("give at_version or at_time, not both")
    if at_version is not None and (type(at_version) is not int or at_version < 0):
        raise InvalidArgument(f"at_version must be an int >= 0, not {at_version!r}")
    if at_time is not None and (not isinstance(at_time, datetime) or at_time.utcoffset() is None):
        raise InvalidArgument(f"at_time must be a timezone-aware datetime, not {at_time!r}")


async def load_state(
    store: EventStore,
    registry: EventRegistry,
    kind: type[Aggregate],
    address: Address,
    *,
    at_version: int | None = None,
    at_time: datetime | None = None,
) -> Aggregate:
    """Rebuild ``address``'s state as of a version or a time, from the log only.

    Uses the newest valid snapshot at or below the bound (for ``at_time``: one
    whose last event was recorded by then), then the events up to the bound.

    Raises:
        ReplayFailed: a stored event could not be decoded or applied.
    """
    stream = address.stream
    if at_time is None:
        state, _, _ = await rebuild(store, registry, kind, stream, to_version=at_version)
        return state
    loaded = None
    if kind.snapshot_every:
        loaded = await load_snapshot_state(store, kind, stream, None)
        if loaded is not None:
            # The snapshot covers events 1..version: usable only if its last
            # event was recorded by ``at_time``.
            last = await store.read_stream(stream, loaded[1], loaded[1])
            if not last or last[0].recorded_at > at_time:
                loaded = None
    if loaded is None:
        state, version = kind(), 0
    else:
        state, version = loaded
    await catch_up(store, registry, state, stream, version, until=at_time)
    return state
