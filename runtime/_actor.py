"""The live actor record and rebuilding an aggregate's state from the log."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import structlog

from aggregates import Aggregate, Event, EventRegistry
from runtime._address import Address
from runtime._mailbox import Message
from stores import CorruptSnapshot, EventStore, Snapshot

__all__ = ["Actor", "ReplayFailed", "rebuild"]

_log = structlog.get_logger("runtime")

READ_PAGE = 2000
"""Events per ``read_stream`` call while rebuilding (bounds memory for long streams)."""


class Actor:
    """One live aggregate instance: its state, version and mailbox.

    Plain ``__slots__`` object with no task of its own (an idle actor costs
    little more than its state): a worker runs its turn when its mailbox goes
    from empty to non-empty.

    Attributes:
        address: Its address.
        kind: The aggregate class.
        state: The aggregate instance, or ``None`` until activated (and after a reset).
        version: The stream version ``state`` includes.
        snapshot_version: The version of the newest snapshot saved or loaded.
        mailbox: Queued messages (``None`` while idle).
        overflow: Messages waiting for room in a full mailbox (``None`` when none).
        scheduled: In the ready queue or running a turn.
        last_used: Monotonic time its last turn ended (for passivation).
    """

    __slots__ = (
        "address",
        "kind",
        "last_used",
        "mailbox",
        "overflow",
        "scheduled",
        "snapshot_version",
        "state",
        "version",
    )

    def __init__(self, address: Address, kind: type[Aggregate], now: float) -> None:
        self.address = address
        self.kind = kind
        self.state: Aggregate | None = None
        self.version = 0
        self.snapshot_version = 0
        self.mailbox: deque[Message] | None = None
        self.overflow: deque[Message] | None = None
        self.scheduled = False
        self.last_used = now

    def depth(self) -> int:
        """Messages queued, including those waiting for room."""
        return (len(self.mailbox) if self.mailbox else 0) + (
            len(self.overflow) if self.overflow else 0
        )


class ReplayFailed(Exception):
    """A stored event could not be decoded or applied (the cause is chained).

    Internal: the runtime turns it into a log line and ``ActivationFailed``.
    """

    def __init__(self, stream: str, version: int, position: int) -> None:
        super().__init__(f"{stream}: event version {version} at position {position}")
        self.stream = stream
        self.version = version
        self.position = position


async def load_snapshot_state(
    store: EventStore, kind: type[Aggregate], stream: str, max_version: int | None
) -> tuple[Aggregate, int] | None:
    """The state and version from the newest usable snapshot, or ``None``.

    A snapshot with another ``snapshot_schema_version``, a corrupt one, or one
    ``from_snapshot`` rejects is ignored (the caller replays in full).
    """
    try:
        snap = await store.load_snapshot(stream, max_version)
    except CorruptSnapshot:
        _log.warning("corrupt snapshot ignored, replaying in full", stream=stream)
        return None
    return _usable(kind, stream, snap)


def _usable(
    kind: type[Aggregate], stream: str, snap: Snapshot | None
) -> tuple[Aggregate, int] | None:
    """A loaded snapshot's state and version, or ``None`` if it cannot be used (logged)."""
    if snap is None:
        return None
    if snap.schema_version != kind.snapshot_schema_version:
        _log.info(
            "snapshot of another schema version ignored",
            stream=stream,
            found=snap.schema_version,
            expected=kind.snapshot_schema_version,
        )
        return None
    try:
        # A private copy: from_snapshot may keep the state's lists and dicts,
        # appliers then mutate them, and a store may share what it returns
        # (MemoryStore does), which would corrupt the stored snapshot.
        state = orjson.loads(orjson.dumps(snap.state))
        return kind.from_snapshot(state), snap.version
    except Exception:
        _log.warning("snapshot rejected by from_snapshot, replaying in full", stream=stream)
        return None


async def catch_up(
    store: EventStore,
    registry: EventRegistry,
    state: Aggregate,
    stream: str,
    version: int,
    *,
    to_version: int | None = None,
    until: datetime | None = None,
) -> int:
    """Apply the stream's events after ``version`` to ``state``; return the new version.

    Args:
        store: The log.
        registry: Decodes (and upcasts) stored payloads.
        state: The aggregate instance to fold into.
        stream: The stream name.
        version: The version ``state`` already includes.
        to_version: Stop after this version.
        until: Stop before the first event recorded after this time.

    Raises:
        ReplayFailed: an event could not be decoded or applied (cause chained).
    """
    decode = registry.decode
    apply = state.apply
    if until is None:
        return await _replay(store, decode, apply, stream, version, to_version)
    while to_version is None or version < to_version:
        page = await store.read_stream(stream, version + 1, to_version, limit=READ_PAGE)
        for rec in page:
            if until is not None and rec.recorded_at > until:
                return version
            try:
                apply(decode(rec.type, rec.schema_version, rec.data))
            except Exception as exc:
                raise ReplayFailed(stream, rec.version, rec.position) from exc
            version = rec.version
        if len(page) < READ_PAGE:
            break
    return version


async def _replay(
    store: EventStore,
    decode: Callable[[str, int, Any], Event],
    apply: Callable[[Event], None],
    stream: str,
    version: int,
    to_version: int | None,
    page: list[tuple[int, str, int, Any]] | None = None,
) -> int:
    """``catch_up`` without a time bound, on the store's lean replay read.

    ``read_stream_payloads`` skips what a replay does not use (position,
    metadata, event id, time), about halving the read cost of a long stream;
    the failing event's position is looked up only when an apply fails.
    ``page``: the first page, already read (by ``read_replay``).
    """
    while True:
        if page is None:
            if to_version is not None and version >= to_version:
                break
            page = await store.read_stream_payloads(
                stream, version + 1, to_version, limit=READ_PAGE
            )
        for ver, type_name, schema_version, data in page:
            try:
                apply(decode(type_name, schema_version, data))
            except Exception as exc:
                failed = await store.read_stream(stream, ver, ver)
                raise ReplayFailed(stream, ver, failed[0].position if failed else 0) from exc
            version = ver
        if len(page) < READ_PAGE:
            break
        page = None
    return version


async def rebuild(
    store: EventStore,
    registry: EventRegistry,
    kind: type[Aggregate],
    stream: str,
    *,
    to_version: int | None = None,
    use_snapshot: bool = True,
) -> tuple[Aggregate, int, int]:
    """Rebuild an aggregate from its newest usable snapshot plus the events after it.

    Returns:
        ``(state, version, snapshot_version)`` (``snapshot_version`` 0: no snapshot used).

    Raises:
        ReplayFailed: an event could not be decoded or applied.
    """
    if not (use_snapshot and kind.snapshot_every):
        state: Any = kind()
        version = await catch_up(store, registry, state, stream, 0, to_version=to_version)
        return state, version, 0
    # The snapshot and the first page of events after it in one read (one
    # round trip where the store can: activation from a snapshot is mostly
    # waiting for reads).
    try:
        snap, page = await store.read_replay(
            stream, kind.snapshot_schema_version, to_version, limit=READ_PAGE
        )
    except CorruptSnapshot:
        _log.warning("corrupt snapshot ignored, replaying in full", stream=stream)
        snap, page = None, None
    loaded = _usable(kind, stream, snap)
    if loaded is None:
        state = kind()
        version = snapshot_version = 0
        if snap is not None and snap.schema_version == kind.snapshot_schema_version:
            page = None  # it starts after a snapshot from_snapshot refused: read from 1
    else:
        state, version = loaded
        snapshot_version = version
    version = await _replay(store, registry.decode, state.apply, stream, version, to_version, page)
    return state, version, snapshot_version
