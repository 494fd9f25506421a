"""The projector base: catch up from the checkpoint, follow the bus, retry, stop or park.

A concrete projector supplies a *sink* (where its read model and checkpoint
live: :class:`~runtime.SQLiteProjector`, :class:`~runtime.StoreProjector`)
and this base runs it: subscribe to the bus after the checkpoint (the
subscription reads the log in pages until it reaches the head, then follows
the live feed), hand each page to the sink as one batch, and move the
checkpoint with it. A SQLite sink takes pages through a pipeline on its own
thread (see ``_projector_pipeline``): the next page is queued while one is
applied, straight from the store's commit listener when the task is idle.
"""

from __future__ import annotations

import abc
import contextvars
import time
from collections.abc import Collection, Sequence
from typing import Any

import anyio
import structlog

from runtime._bus import EventBus, Subscription
from runtime._projection_errors import (
    ProjectionConfigError,
    ProjectionError,
    ProjectionFailed,
    ProjectionTimeout,
    ProjectorNotRunning,
)
from runtime._projection_types import (
    FailurePolicy,
    ParkedEvent,
    ProjectorState,
    ProjectorStatistics,
)
from runtime._projector_pipeline import drain, follow, settle
from runtime._projector_sink import Sink, validate_name
from stores import EventStore, RecordedEvent, StoreClosed

__all__ = ["Projector"]

_log = structlog.get_logger("runtime.projector")


class Projector(abc.ABC):
    """Base of projectors: subclasses say where the read model and checkpoint live.

    Args:
        name: A unique name: letters, digits, ``_``, ``.`` and ``-``.
        types: Only events of these type names reach the handler (None: all).
        categories: Only events of these stream categories (None: all).
        policy: What to do once the handler failed ``max_attempts`` times on an event.
        max_attempts: Tries per event (the first plus retries), at least 1.
        retry_backoff: Seconds before the first retry; doubles each retry.
        max_backoff: The longest pause between retries.
        batch_size: The most events handled in one batch (one transaction),
            and the page size of its catch-up reads.
        checkpoint_interval: Seconds between durable checkpoint writes while
            only unwanted events go by (a restart then re-reads at most that
            much of them; the read model is unaffected).
    """

    def __init__(
        self,
        name: str,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        policy: FailurePolicy = FailurePolicy.STOP,
        max_attempts: int = 3,
        retry_backoff: float = 0.05,
        max_backoff: float = 2.0,
        batch_size: int = 1000,
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.name = validate_name(name)
        if isinstance(types, str) or isinstance(categories, str):
            raise ProjectionConfigError(
                "types and categories take a collection of names, not a str"
            )
        if not isinstance(policy, FailurePolicy):
            raise ProjectionConfigError(f"policy must be a FailurePolicy, not {policy!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ProjectionConfigError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ProjectionConfigError(f"batch_size must be an int >= 1, not {batch_size!r}")
        if not (retry_backoff >= 0 and max_backoff >= 0 and checkpoint_interval >= 0):
            raise ProjectionConfigError("retry_backoff, max_backoff and checkpoint_interval >= 0")
        self.types = None if types is None else frozenset(types)
        self.categories = None if categories is None else frozenset(categories)
        self.policy = policy
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        self._state = ProjectorState.NEW
        self._paused = False
        self._failure: tuple[RecordedEvent, int, BaseException] | None = None
        self._position = 0
        self._saved = 0
        self._last_save = 0.0
        self._epoch = 0
        self._rebuilding = False
        self._bus: EventBus | None = None
        self._sink: Sink | None = None
        self._subscription: Subscription | None = None
        self._restart: anyio.CancelScope | None = None
        self._lock: anyio.Lock | None = None
        self._changed: anyio.Event | None = None
        self._last_applied_at: Any = None
        # The pipeline (see _projector_pipeline): batches queued on the sink's
        # thread, the highest position queued, the first failure among them.
        self._inflight = 0
        self._submitted = 0
        self._pipe_failure: tuple[Sequence[RecordedEvent], int, BaseException] | None = None
        self._pipe_changed: anyio.Event | None = None
        self._awaiting_page = False
        self._pumping: tuple[Subscription, int] | None = None  # see pump()
        # The context of the code that started the projector (see _run).
        self._context: contextvars.Context | None = None
        self._handled = 0
        self._batches = 0
        self._retries = 0
        self._parked = 0

    # -- what subclasses provide ---------------------------------------------

    @abc.abstractmethod
    async def _open_sink(self, store: EventStore, runtime: Any) -> Sink:
        """Open the read model and return its sink (the checkpoint is read from it)."""

    def _validate(self, runtime: Any) -> None:  # noqa: B027 - an optional hook
        """Raise ProjectionConfigError if the projector cannot run with this runtime."""

    async def _reset_sink(self, sink: Sink, position: int) -> Sink:
        """Point the read model at ``position`` (override to clear it on 0)."""
        await sink.reset(position)
        return sink

    # -- running -------------------------------------------------------------

    async def _run(
        self, bus: EventBus, runtime: Any = None, *, task_status: Any = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or the bus closes (the engine calls this in its task group)."""
        if self._state not in (ProjectorState.NEW, ProjectorState.STOPPED):
            raise ProjectorNotRunning(f"projector {self.name!r} is already running")
        self._bus = bus
        self._failure = None  # a restart tries the failed event again
        self._lock = anyio.Lock()
        self._changed = anyio.Event()
        # A copy of the starter's context (asyncio copies it into each task),
        # for sinks whose handler runs on a thread, which would see none of it.
        self._context = contextvars.copy_context()
        self._sink = await self._open_sink(bus.store, runtime)
        try:
            self._position = self._saved = self._submitted = await self._sink.checkpoint()
            self._last_save = time.monotonic()
            self._state = ProjectorState.PAUSED if self._paused else ProjectorState.RUNNING
            task_status.started()
            await self._follow(bus)
        finally:
            self._state = ProjectorState.STOPPED
            self._notify()
            with anyio.CancelScope(shield=True):
                try:
                    # Queued batches commit first; one that failed is dropped
                    # with those after it (a restart re-reads them).
                    await drain(self)
                    if self._position > self._saved and self._failure is None:
                        # Only unwanted events were passed over since the last
                        # save: losing this write costs a re-read, not a wrong model.
                        await self._sink.save(self._position)
                except Exception:
                    _log.warning("final checkpoint not saved", projector=self.name, exc_info=True)
                finally:
                    await self._sink.aclose()

    async def _follow(self, bus: EventBus) -> None:
        failures = 0
        while bus._open:
            try:
                await self._follow_once(bus)
                failures = 0
            except StoreClosed:
                return  # the store is shutting down under us: stop quietly
            except Exception:
                # A failing read or checkpoint write (not a handler: those are
                # retried per event) restarts the subscription from the last
                # position after a backoff, like a supervisor restarting a child.
                failures += 1
                _log.warning(
                    "projector restarting after an error",
                    projector=self.name,
                    failures=failures,
                    exc_info=True,
                )
                await anyio.sleep(min(self.retry_backoff * 2 ** (failures - 1), self.max_backoff))
            finally:
                self._subscription = None
                self._pumping = None

    async def _follow_once(self, bus: EventBus) -> None:
        assert self._lock is not None
        epoch = self._epoch
        with anyio.CancelScope() as scope:
            self._restart = scope
            await self._settle_when_running()
            if self._failure is not None:
                await self._wait_running()
                return  # re-read from the checkpoint (resume retries the event)
            async with bus.subscribe(
                self._position,
                types=self.types,
                categories=self.categories,
                page_size=self.batch_size,
                max_batch=self.batch_size,
            ) as subscription:
                self._subscription = subscription
                await follow(self, subscription, epoch)

    async def _settle_when_running(self) -> None:
        """Deal with a queued batch that failed (settle), but never while paused.

        A batch can fail on the sink's thread while pause() drains it: the
        drain ends, pause() returns, and the failure wakes this task. Applying
        that batch the slow way (retry, split, park) would move a paused read
        model, so wait for resume() first. Paused is checked again under the
        lock: a pause() that got the lock first has returned by the time we hold it.
        """
        assert self._lock is not None
        while True:
            await self._wait_running()
            async with self._lock:
                if not self._paused:
                    await settle(self)
                    return

    async def _wait_running(self) -> None:
        while self._paused or self._failure is not None:
            assert self._changed is not None
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    def _restart_from(self, position: int) -> None:
        """Drop the current subscription and re-subscribe after ``position`` (holds the lock)."""
        self._epoch += 1
        self._position = self._saved = self._submitted = position
        self._failure = None
        # The caller drained the pipeline: a queued batch that failed is moot now.
        self._pipe_failure = None
        if self._sink is not None:
            self._sink.rearm()
        if self._state is ProjectorState.FAILED:
            self._state = ProjectorState.PAUSED if self._paused else ProjectorState.RUNNING
        if self._restart is not None:
            self._restart.cancel()
        self._notify()

    def _advance(self, position: int, events: Sequence[RecordedEvent] = ()) -> None:
        if events:
            self._last_applied_at = events[-1].recorded_at
        if position > self._position:
            self._position = position
            self._notify()

    def _failure_error(self) -> ProjectionFailed | None:
        if self._failure is None:
            return None
        event, attempts, error = self._failure
        failure = ProjectionFailed(
            self.name, event.position, event.type, event.event_id, attempts, error
        )
        failure.__cause__ = error
        return failure

    # -- public operations ---------------------------------------------------

    @property
    def state(self) -> ProjectorState:
        """The projector's state."""
        return self._state

    @property
    def position(self) -> int:
        """The position the read model reflects (see :class:`ProjectorStatistics`)."""
        return self._position

    @property
    def error(self) -> ProjectionFailed | None:
        """The failure that stopped the projector (STOP policy), or None."""
        return self._failure_error()

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - read-your-writes API takes a timeout
        """Wait until the read model reflects ``position`` (read-your-writes).

        Args:
            position: A global position, e.g. the last of an append's positions.
            timeout: Seconds to wait at most.

        Raises:
            ProjectionFailed: the projector stopped on an event at or below
                ``position`` (the handler's error is chained).
            ProjectionTimeout: the position was not reached in time.
            ProjectorNotRunning: the projector is not running in an engine.
        """
        with anyio.move_on_after(timeout):
            while True:
                if self._position >= position:
                    return
                failure = self._failure_error()
                if failure is not None and failure.position <= position:
                    raise failure
                if self._changed is None or self._state is ProjectorState.STOPPED:
                    raise ProjectorNotRunning(f"projector {self.name!r} is not running")
                await self._changed.wait()
        raise ProjectionTimeout(self.name, position, self._position, timeout)

    async def pause(self) -> None:
        """Stop applying events once the batch in flight (if any) has committed.

        The projector is paused from the call on. The call then waits for
        any other operation holding the projector (a reset, a rebuild) and
        then, shielded, for the batch in flight (its thread finishes it
        anyway). Cancelling the call (a timeout) can cut short only the first
        wait; the projector stays paused either way: :meth:`resume` undoes it.
        """
        self._paused = True
        if self._state is ProjectorState.RUNNING:
            self._state = ProjectorState.PAUSED
        self._notify()
        if self._lock is not None:
            async with self._lock:
                await drain(self)

    async def resume(self) -> None:
        """Go on after :meth:`pause`, or try a failed event again (STOP policy)."""
        self._paused = False
        if self._failure is not None:
            self._failure = None
        if self._state in (ProjectorState.PAUSED, ProjectorState.FAILED):
            self._state = ProjectorState.RUNNING
        self._notify()

    async def reset(self, position: int = 0) -> None:
        """Move the checkpoint to ``position`` (backwards too) and go on from there.

        For a read model that keeps state (SQLite), ``reset(0)`` starts it
        empty and replays the log; a reset to ``p > 0`` only moves the
        checkpoint, so events after ``p`` reach the handler again on top of
        the current state (use it to skip forward, or with idempotent handlers).
        A reset also clears a STOP failure. A paused projector stays paused.

        Raises:
            ProjectorNotRunning: the projector is not running in an engine.
            ProjectionConfigError: ``position`` is not an int >= 0.
            ProjectionError: a rebuild of this projector is running.
        """
        if type(position) is not int or position < 0:
            raise ProjectionConfigError(f"position must be an int >= 0, not {position!r}")
        if self._lock is None or self._sink is None or self._state is ProjectorState.STOPPED:
            raise ProjectorNotRunning(f"projector {self.name!r} is not running")
        if self._rebuilding:
            raise ProjectionError(f"projector {self.name!r} is being rebuilt; reset it after")
        async with self._lock:
            await drain(self)
            self._sink = await self._reset_sink(self._sink, position)
            self._restart_from(position)

    async def parked(self) -> list[ParkedEvent]:
        """The events parked by this projector, in position order."""
        if self._sink is None or self._state is ProjectorState.STOPPED:
            raise ProjectorNotRunning(f"projector {self.name!r} is not running")
        return await self._sink.parked()

    async def retry_parked(self, position: int | None = None) -> list[ParkedEvent]:
        """Apply parked events again (one position, or all); return those still parked.

        A retried event that succeeds leaves the dead-letter table (in the same
        transaction, for SQLite read models); one that fails again stays,
        with its error and attempts updated. Retried events are applied after
        later events were: give them handlers that tolerate that.

        Raises:
            ParkedEventNotFound: ``position`` is given and not parked.
            ProjectorNotRunning: the projector is not running in an engine.
        """
        from runtime._projection_errors import ParkedEventNotFound

        if self._sink is None or self._lock is None or self._bus is None:
            raise ProjectorNotRunning(f"projector {self.name!r} is not running")
        parked = await self._sink.parked()
        chosen = [p for p in parked if position is None or p.position == position]
        if position is not None and not chosen:
            raise ParkedEventNotFound(f"projector {self.name!r} has no event parked at {position}")
        for item in chosen:
            found = await self._bus.store.read_all(item.position - 1, 1)
            if not found or found[0].position != item.position:
                continue
            async with self._lock:
                await self._sink.retry_parked(found[0], item.attempts + 1)
        return await self._sink.parked()

    def statistics(self) -> ProjectorStatistics:
        """An immutable snapshot of the projector's progress and counters."""
        head = self._bus.head if self._bus is not None else self._position
        lag = max(head - self._position, 0)
        lag_seconds = 0.0
        newest = self._bus.last_recorded_at if self._bus is not None else None
        if lag and newest is not None and self._last_applied_at is not None:
            lag_seconds = max((newest - self._last_applied_at).total_seconds(), 0.0)
        failure = self._failure_error()
        return ProjectorStatistics(
            name=self.name,
            state=self._state,
            position=self._position,
            checkpoint=self._saved,
            head=max(head, self._position),
            lag_events=lag,
            lag_seconds=lag_seconds,
            events_handled=self._handled,
            batches=self._batches,
            retries=self._retries,
            parked=self._parked,
            live=self._subscription is not None and self._subscription.live,
            error=None if failure is None else str(failure),
        )
