"""The :class:`Runtime`: lifecycle, registry, passivation, shutdown, queries.

The sending API (``ask``, ``ask_nowait``, ``tell``) is the :class:`Sending` mixin in
``runtime._sending``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import Self

import anyio
import structlog

from aggregates import Aggregate, EventRegistry
from runtime._actor import ReplayFailed
from runtime._address import Address
from runtime._directory import Directory
from runtime._errors import (
    ActivationFailed,
    InvalidAddress,
    InvalidArgument,
    RuntimeClosed,
    UnknownCategory,
)
from runtime._mailbox import Deadlines
from runtime._outcome import DeadLetter
from runtime._projection_engine import ProjectionEngine
from runtime._projector import Projector
from runtime._scheduler import Scheduler
from runtime._sending import Sending, _positive
from runtime._snapshots import SnapshotWriter
from runtime._stats import Counters, RuntimeStatistics
from runtime._temporal import check_bounds, load_state
from runtime._turns import Turns
from runtime._write import WritePath
from stores import EventStore
from stores._gc import DEFAULT_GC_THRESHOLD, hold_gc_threshold

__all__ = ["Runtime"]

_log = structlog.get_logger("runtime")

_MAX_WORKERS = 4096
"""Most actors running a turn at once (the store batches at most ~2,000 appends anyway)."""
_SPARE_WORKERS = 64
_STOP_GRACE = 5.0
"""Most seconds in-flight turns get to finish their append after the drain deadline
(capped by ``shutdown_timeout``)."""


class Runtime(Sending):
    """Hosts aggregates as addressable actors over one event store.

    Use as ``async with Runtime(aggregates=[Account], path="events.db") as rt:``.
    Each address (``Account/42``) is a lightweight actor activated on its first
    command (newest snapshot plus the events after it), running its commands
    one at a time in arrival order, and passivated when idle. Different
    addresses run concurrently, and their appends group-commit in the store.

    Args:
        aggregates: The aggregate classes, one per category.
        path: A SQLite file: the runtime opens a ``SQLiteStore(path)``
            (durability FULL) and closes it on exit.
        store: An unopened store instance instead of ``path``; the runtime
            opens and closes it.
        registry: The event registry (default: built from ``aggregates``).
        mailbox_size: Commands queued per actor before ``ask`` waits and
            ``ask_nowait``/``tell`` are refused with ``Overloaded``.
        idle_timeout: Seconds after its last command an actor is passivated.
        max_actors: The cap on live actors; least-recently-used idle actors
            are passivated first.
        max_retries: Re-runs of a command after another process appended to
            its stream first, before ``ConflictRetriesExhausted``.
        shutdown_timeout: Seconds queued commands get to finish on exit.
        projectors: Projectors (read models, process managers) run by the
            runtime's :attr:`projections` engine: started once the runtime is
            open, stopped before it drains its mailboxes.
        gc_threshold: Process-wide: while the runtime is open, the cyclic
            garbage collector's generation-0 threshold is at least this many
            allocations (Python's default is 700); when the last runtime
            closes, the old thresholds are restored unless the application
            changed them meanwhile. Under hundreds of concurrent commands the
            in-flight objects otherwise outlive young collections, get
            promoted, and trigger full collections over every live actor
            (~30% of the CPU per command and 1.3-1.9x the p99 latency on the
            1,000-caller benchmark). A higher threshold set by the
            application, or a disabled GC, is left alone. ``None`` never
            touches the GC. See ``stores/_gc.py`` and the README.

    Raises:
        InvalidArgument: a bad option, both or neither of path/store, a class
            that is not an Aggregate, or two aggregates with one category.
    """

    def __init__(
        self,
        aggregates: Iterable[type[Aggregate]],
        *,
        path: str | os.PathLike[str] | None = None,
        store: EventStore | None = None,
        registry: EventRegistry | None = None,
        mailbox_size: int = 1000,
        idle_timeout: float = 300.0,
        max_actors: int = 100_000,
        max_retries: int = 3,
        shutdown_timeout: float = 10.0,
        projectors: Iterable[Projector] = (),
        gc_threshold: int | None = DEFAULT_GC_THRESHOLD,
    ) -> None:
        kinds: dict[str, type[Aggregate]] = {}
        for kind in aggregates:
            if not (isinstance(kind, type) and issubclass(kind, Aggregate)):
                raise InvalidArgument(f"aggregates must be Aggregate subclasses, not {kind!r}")
            if kind.category in kinds and kinds[kind.category] is not kind:
                raise InvalidArgument(f"two aggregates claim the category {kind.category!r}")
            kinds[kind.category] = kind
        if (path is None) == (store is None):
            raise InvalidArgument("give exactly one of path= or store=")
        if store is not None and not isinstance(store, EventStore):
            raise InvalidArgument(f"store must be an EventStore, not {store!r}")
        _positive("mailbox_size", mailbox_size, integer=True)
        _positive("idle_timeout", idle_timeout, integer=False)
        _positive("max_actors", max_actors, integer=True)
        _positive("shutdown_timeout", shutdown_timeout, integer=False)
        if gc_threshold is not None:
            _positive("gc_threshold", gc_threshold, integer=True)
        if type(max_retries) is not int or max_retries < 0:
            raise InvalidArgument("max_retries must be an int >= 0")
        if registry is None:
            registry = EventRegistry()
            for kind in kinds.values():
                registry.register_aggregate(kind)
        elif not isinstance(registry, EventRegistry):
            raise InvalidArgument(f"registry must be an EventRegistry, not {registry!r}")
        if store is None:
            from stores import SQLiteStore

            store = SQLiteStore(os.fspath(path))  # type: ignore[arg-type]
        self._kinds = kinds
        self._store: EventStore = store
        self._registry = registry
        self._mailbox_size = mailbox_size
        self._idle_timeout = float(idle_timeout)
        self._shutdown_timeout = float(shutdown_timeout)
        self._counters = Counters()
        self._deadlines = Deadlines()
        self._directory = Directory(max_actors)
        self._snapshots = SnapshotWriter(store, self._counters)
        self._write = WritePath(store, registry, self._counters, self._snapshots, max_retries)
        self._turns = Turns(self._write, self._counters, self._directory)
        self._scheduler = Scheduler(self._turns.step, _MAX_WORKERS)
        self._turns.scheduler = self._scheduler
        self._gc_threshold = gc_threshold
        self._state = "new"  # new -> open -> closing -> closed
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Built here so bad projector options fail at construction, not on entry.
        self._projections = ProjectionEngine(store, projectors, runtime=self)

    # -- lifecycle -------------------------------------------------------------

    @property
    def store(self) -> EventStore:
        """The event store the runtime writes to."""
        return self._store

    @property
    def projections(self) -> ProjectionEngine:
        """The projection engine running the ``projectors`` given to the runtime.

        ``rt.projections["balances"]`` is one projector; ``rebuild(name)``,
        ``wait_for(position)`` and ``statistics()`` act on them.
        """
        return self._projections

    @property
    def registry(self) -> EventRegistry:
        """The event registry decoding stored events."""
        return self._registry

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeClosed("a Runtime can be entered once")
        self._state = "starting"
        self._loop = asyncio.get_running_loop()
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self._store)
            self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
            self._scheduler.start(tg)
            tg.start_soon(self._reaper)
            tg.start_soon(self._snapshots.run)
            # Registered before anything can queue work, so every exit path drains
            # and stops the workers (the stack unwinds last-in, first-out).
            stack.push_async_callback(self._shutdown)
            if self._gc_threshold is not None:
                stack.callback(hold_gc_threshold(self._gc_threshold))
            self._state = "open"
            # Components that use the running runtime enter here, one line each;
            # they start after it opens (process managers may send commands) and
            # stop before it drains (the stack unwinds last-in, first-out).
            if self._projections.projectors:
                # Without projectors no bus is opened: its commit listener
                # would make the store decode every committed batch for nobody.
                await stack.enter_async_context(self._projections)
        except BaseException:
            try:
                await stack.aclose()
            finally:
                self._state = "closed"
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                # The body's exception is not handed to the task group (anyio
                # would wrap it in an ExceptionGroup): it propagates unchanged
                # once the cleanup is done. The drain (_shutdown) shields itself
                # under its deadlines; the task group must exit in this scope.
                await stack.__aexit__(None, None, None)
        finally:
            self._state = "closed"

    async def _shutdown(self) -> None:
        """Stop accepting, drain within the deadline, fail the rest, stop the workers."""
        self._state = "closing"
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._shutdown_timeout):
                await self._turns.wait_idle()
            if self._turns.busy:
                stopped = 0
                for actor in self._directory:
                    stopped += self._turns.fail_queued(actor)
                _log.warning("shutdown deadline passed; queued commands failed", count=stopped)
                with anyio.move_on_after(min(_STOP_GRACE, self._shutdown_timeout)):
                    await self._turns.wait_idle()
                self._turns.abandon()
            with anyio.move_on_after(self._shutdown_timeout):
                await self._snapshots.flush()
        self._turns.stopped = True
        self._scheduler.stop()
        self._scheduler.cancel()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _reaper(self) -> None:
        interval = max(0.005, min(self._idle_timeout / 4, 1.0))
        while True:
            await anyio.sleep(interval)
            self._directory.sweep(self._idle_timeout)
            self._scheduler.trim(_SPARE_WORKERS)

    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The most recent failed or refused ``tell`` commands (up to 1,000), oldest first."""
        return self._turns.dead_letters()

    # -- turns -----------------------------------------------------------------

    # -- queries and operations -------------------------------------------------

    async def load(
        self,
        address: Address | str,
        *,
        at_version: int | None = None,
        at_time: datetime | None = None,
    ) -> Aggregate:
        """Rebuild an aggregate's state from the log, without touching the live actor.

        Args:
            address: The aggregate's address.
            at_version: The state after this stream version (``0``: initial state).
            at_time: The state including every event recorded at or before this
                timezone-aware time.

        Returns:
            A fresh aggregate instance (the latest state when no bound is given).

        Raises:
            InvalidAddress, UnknownCategory, InvalidArgument: bad input.
            RuntimeClosed: the runtime is not running.
            ActivationFailed: a stored event could not be decoded or applied.
        """
        if self._state != "open":
            raise RuntimeClosed("the runtime is not running (enter it with `async with`)")
        if not isinstance(address, Address):
            if not isinstance(address, str):
                raise InvalidAddress(f"an address is an Address or 'Category/id', not {address!r}")
            address = Address.parse(address)
        kind = self._kinds.get(address.category)
        if kind is None:
            raise UnknownCategory(address.category)
        check_bounds(at_version, at_time)
        try:
            return await load_state(
                self._store, self._registry, kind, address, at_version=at_version, at_time=at_time
            )
        except ReplayFailed as exc:
            raise ActivationFailed(address, str(exc)) from exc.__cause__

    def passivate(self, address: Address | str) -> bool:
        """Drop an idle actor from memory now (its next command reactivates it).

        Returns:
            Whether it was live and idle (a busy actor is left alone).
        """
        if not isinstance(address, Address):
            address = Address.parse(address)
        return self._directory.passivate(address)

    def statistics(self) -> RuntimeStatistics:
        """An immutable snapshot of the runtime's counters and the store's."""
        c = self._counters
        depths = [a.depth() for a in self._directory if a.scheduled]
        return RuntimeStatistics(
            live_actors=len(self._directory),
            mailbox_max=max(depths, default=0),
            mailbox_total=sum(depths),
            commands=c.commands,
            rejected=c.rejected,
            duplicates=c.duplicates,
            conflicts=c.conflicts,
            retries=c.retries,
            activations=c.activations,
            activation_mean_s=c.activation_total / c.activations if c.activations else 0.0,
            activation_max_s=c.activation_max,
            passivations=self._directory.passivations,
            resets=c.resets,
            snapshots=c.snapshots,
            dead_letters=c.dead_letters,
            workers=self._scheduler.workers,
            store=self._store.statistics(),
        )
