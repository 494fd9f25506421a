"""The write path: one command through handler, append, apply and reply.

handler -> events -> ``NewEvent`` (type name, the event dataclass as data,
schema version, command/correlation/causation ids as metadata) ->
``store.append(stream, events, expected_version=actor.version, command_id, reply)``
-> apply -> :class:`Outcome`. The store group-commits appends from many actors
in one transaction, so each actor awaits its own append while others' are in
flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson
import structlog

from aggregates import Aggregate, EventRegistry, InvalidHandlerResult
from runtime._actor import Actor, ReplayFailed, catch_up, rebuild
from runtime._address import Address
from runtime._errors import ActivationFailed, ConflictRetriesExhausted, InvalidAddress
from runtime._mailbox import Message
from runtime._outcome import Outcome
from runtime._snapshots import SnapshotWriter
from runtime._stats import Counters
from stores import (
    AppendResult,
    CommandRecord,
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from stores._codec import new_event_id

__all__ = ["WritePath"]

_log = structlog.get_logger("runtime")

# The options the stores encode with (stores/_codec.py), so an outcome's event
# data matches what a read of the log returns.
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
_NO_POSITIONS = range(0)
_BASE_HANDLE = Aggregate.handle


def native_start(store: EventStore) -> Callable[..., asyncio.Future[AppendResult]] | None:
    """``store.start_append`` if the store's own class provides it, else ``None``.

    The turns' fast path starts appends with it. A store class that
    overrides ``append`` without its own ``start_append`` (a wrapper that
    gates, counts or fails appends, say) would be bypassed by an inherited
    one, so for it the runtime awaits ``append`` as before; so it does for
    the contract's default, which only wraps ``append`` in a task.
    """
    for cls in type(store).__mro__:
        own = vars(cls)
        if "append" in own or "start_append" in own:
            if "append" in own and "start_append" in own and cls is not EventStore:
                return store.start_append
            return None
    return None


class WritePath:
    """Activates actors and runs their commands against one store."""

    __slots__ = (
        "_known",
        "counters",
        "max_retries",
        "registry",
        "snapshots",
        "start_append",
        "store",
    )

    def __init__(
        self,
        store: EventStore,
        registry: EventRegistry,
        counters: Counters,
        snapshots: SnapshotWriter,
        max_retries: int,
    ) -> None:
        self.store = store
        self.registry = registry
        self.counters = counters
        self.snapshots = snapshots
        self.max_retries = max_retries
        self._known = frozenset(registry.names().values())
        self.start_append = native_start(store)

    # -- activation ----------------------------------------------------------

    async def activate(self, actor: Actor) -> None:
        """Load the actor's state: newest usable snapshot, then the events after it.

        Raises:
            ActivationFailed: a stored event could not be decoded or applied
                (logged with the address and position; the actor stays
                unactivated, so the next command tries again).
        """
        started = time.perf_counter()
        try:
            state, version, snapshot_version = await rebuild(
                self.store, self.registry, actor.kind, actor.address.stream
            )
        except ReplayFailed as exc:
            self._replay_failed(actor, exc)
        actor.state = state
        actor.version = version
        actor.snapshot_version = snapshot_version
        elapsed = time.perf_counter() - started
        counters = self.counters
        counters.activations += 1
        counters.activation_total += elapsed
        if elapsed > counters.activation_max:
            counters.activation_max = elapsed

    def _replay_failed(self, actor: Actor, exc: ReplayFailed) -> Any:
        actor.state = None
        actor.version = 0
        self.counters.resets += 1
        _log.error(
            "stored event could not be applied; actor reset, it reloads on its next command",
            address=str(actor.address),
            stream=exc.stream,
            version=exc.version,
            position=exc.position,
            exc_info=exc.__cause__,
        )
        raise ActivationFailed(actor.address, str(exc)) from exc.__cause__

    async def _catch_up(self, actor: Actor) -> None:
        """Fold in events another process appended (after a ConcurrencyError)."""
        state = actor.state
        assert state is not None
        try:
            actor.version = await catch_up(
                self.store, self.registry, state, actor.address.stream, actor.version
            )
        except ReplayFailed as exc:
            self._replay_failed(actor, exc)
        except BaseException:
            # Pages already folded in changed the state, but the version did
            # not move: reload from the store on the next command rather than
            # fold those events in twice.
            actor.state = None
            actor.version = 0
            raise

    # -- commands --------------------------------------------------------------

    async def run(
        self,
        actor: Actor,
        msg: Message,
        decided: tuple[list[Any], Any] | Exception | None = None,
        failed: Exception | None = None,
    ) -> Outcome:
        """Run one command on an activated actor and return its outcome.

        Args:
            actor: The actor, activated.
            msg: The command.
            decided: What the handler already returned (or raised) on the
                actor's current state, so it is not run twice (the turn's
                fast path hands a command here when it needs an await).
            failed: The ``ConcurrencyError`` or ``DuplicateCommand`` the
                fast path's append of this command failed with (its first
                attempt).

        Raises:
            Exception: what the handler raised (nothing recorded, state untouched).
            InvalidHandlerResult: the handler returned non-events or an
                unregistered event type.
            SerializationError, PayloadTooLarge: from the store; nothing written.
            ConflictRetriesExhausted: other writers won ``max_retries + 1`` times.
        """
        store = self.store
        command_id = msg.command_id
        stream = actor.address.stream
        attempts = 0
        if failed is not None:
            attempts = 1
            replayed = await self._append_failed(actor, msg, failed, attempts)
            if replayed is not None:
                return replayed
        while True:
            attempts += 1
            state = actor.state
            assert state is not None
            # Idempotency without a read per command: the store checks the id
            # in the append's own transaction (DuplicateCommand, before the
            # version), so find_command is needed only when no append happens
            # (the handler raised or decided no events). Handlers are pure, so
            # running one for a repeated id has no effect of its own.
            try:
                if decided is None:
                    events, value = state.handle(msg.command)
                elif isinstance(decided, Exception):
                    raise decided
                else:
                    events, value = decided
            except Exception:
                decided = None
                if command_id is not None:
                    record = await store.find_command(command_id)
                    if record is not None:
                        return await self._replayed(actor, record)
                # A rejection stands only if decided on the latest state: another
                # process sharing the log may have appended since we last looked.
                # One cheap read, on the rejection path only.
                if attempts <= self.max_retries and (
                    await store.stream_version(stream) != actor.version
                ):
                    self.counters.retries += 1
                    await self._catch_up(actor)
                    continue
                raise
            decided = None
            if not events:
                if command_id is not None:
                    record = await store.find_command(command_id)
                    if record is not None:
                        return await self._replayed(actor, record)
                return self.unchanged(actor, value)
            # The handler's fresh list becomes the NewEvent list (each NewEvent's
            # data is the event itself): one list fewer held across the append.
            new = self.encode(state, events, msg)
            del events
            try:
                result = await store.append(
                    stream,
                    new,
                    actor.version,
                    command_id=command_id,
                    reply=value if command_id is not None else None,
                )
            except (ConcurrencyError, DuplicateCommand) as exc:
                replayed = await self._append_failed(actor, msg, exc, attempts)
                if replayed is not None:
                    return replayed
                continue
            return self.finish(actor, state, new, result, value)

    def unchanged(self, actor: Actor, value: Any) -> Outcome:
        """The outcome of a command that recorded nothing (a query's answer)."""
        return Outcome(actor.address, (), actor.version, _NO_POSITIONS, value)

    async def _append_failed(
        self, actor: Actor, msg: Message, exc: Exception, attempts: int
    ) -> Outcome | None:
        """Handle an append's ConcurrencyError or DuplicateCommand.

        Returns:
            The original outcome of a repeated command id, or ``None``: the
            actor caught up with the log, run the command again.

        Raises:
            ConflictRetriesExhausted: ``attempts`` is past ``max_retries``.
        """
        if isinstance(exc, ConcurrencyError):
            self.counters.conflicts += 1
            if attempts > self.max_retries:
                raise ConflictRetriesExhausted(actor.address, attempts, exc) from exc
            self.counters.retries += 1
            await self._catch_up(actor)
            return None
        if not isinstance(exc, DuplicateCommand):
            raise exc
        # A repeated command id (from this or another process, now or before
        # a restart): answer with the original outcome.
        command_id = msg.command_id
        assert command_id is not None
        dup = exc.record if isinstance(exc.record, CommandRecord) else None
        if dup is None:
            dup = await self.store.find_command(command_id)
        if dup is None:
            raise exc
        if dup.stream == actor.address.stream and dup.version > actor.version:
            # Its events were written by someone else: fold them in.
            await self._catch_up(actor)
        return await self._replayed(actor, dup)

    def finish(
        self, actor: Actor, state: Aggregate, new: list[NewEvent], result: AppendResult, value: Any
    ) -> Outcome:
        """Fold a committed append's events in and build the command's outcome."""
        self._apply(actor, state, new, result.positions, result.version)
        # The store's commit time when it reports one; else the reply time, within
        # milliseconds of the commit (a read of the log returns the store's own).
        at = result.recorded_at
        return Outcome._committed(
            actor.address,
            actor.address.stream,
            new,
            result.version,
            result.positions,
            value,
            at if at is not None else time.time(),
        )

    def encode(self, state: Aggregate, events: list[Any], msg: Message) -> list[NewEvent]:
        """Turn ``events`` into NewEvents in place and return the same list.

        ``Aggregate.handle`` returns a fresh list (never the handler's own),
        so reusing it spares a list per command for the cyclic GC to track.
        """
        known = self._known
        meta = msg.metadata()
        # An aggregate that overrides handle may return a list it keeps: copy that one.
        new: list[Any] = events if type(state).handle is _BASE_HANDLE else list(events)
        for i, event in enumerate(events):
            cls = type(event)
            if cls not in known:
                raise InvalidHandlerResult(
                    f"{type(state).__qualname__}'s handler for {type(msg.command).__qualname__} "
                    f"returned a {cls.__qualname__}, which is not in the event registry "
                    "(add an @applies method for it or register it)"
                )
            new[i] = NewEvent(
                cls.__event_type__, event, meta, cls.__schema_version__, new_event_id()
            )
        return new

    def _apply(
        self, actor: Actor, state: Aggregate, events: list[NewEvent], positions: range, version: int
    ) -> None:
        """Fold just-committed events in; an applier that fails on one is a bug: reset."""
        i = 0
        try:
            for i, event in enumerate(events):  # noqa: B007 - i names the failing event
                state.apply(event.data)
        except Exception:
            actor.state = None
            actor.version = 0
            self.counters.resets += 1
            _log.error(
                "applying a just-recorded event failed; actor reset, it reloads from the log",
                address=str(actor.address),
                version=version - len(events) + 1 + i,
                position=positions[i],
                exc_info=True,
            )
            return
        actor.version = version

    async def _replayed(self, actor: Actor, record: CommandRecord) -> Outcome:
        """The original outcome of an already recorded command id, read back from the log."""
        self.counters.duplicates += 1
        count = len(record.positions)
        events: list[RecordedEvent] = []
        if count:
            events = await self.store.read_stream(
                record.stream, record.version - count + 1, record.version
            )
        address = actor.address
        if record.stream != address.stream:
            # The id was first used at another address: say where it ran.
            category, _, id_ = record.stream.partition("-")
            with suppress(InvalidAddress):  # a stream the store got from elsewhere
                address = Address(category, id_)
        return Outcome(address, tuple(events), record.version, record.positions, record.reply, True)

    def maybe_snapshot(self, actor: Actor) -> None:
        """Queue a snapshot if the aggregate's policy says one is due (after the reply)."""
        every = actor.kind.snapshot_every
        state = actor.state
        if not every or state is None or actor.version - actor.snapshot_version < every:
            return
        actor.snapshot_version = actor.version
        try:
            # Round-trip now: the state keeps changing after this turn, and the
            # writer saves later.
            data = orjson.loads(orjson.dumps(state.snapshot(), option=_JSON_OPTS))
        except Exception:
            _log.warning(
                "snapshot skipped: the state cannot be encoded as JSON",
                address=str(actor.address),
                version=actor.version,
                exc_info=True,
            )
            return
        self.snapshots.put(
            actor.address.stream, actor.version, data, actor.kind.snapshot_schema_version
        )
