"""The event bus: committed events to subscribers, in position order, live or from the log.

The bus is a fast path, not the truth (DESIGN.md guarantee 7). It attaches to
the store with ``add_commit_listener``; the store calls it on the writer's
task right after each COMMIT, so an event reaches a subscriber only once it
is durable (guarantee 2). The listener never awaits: it appends to each
subscriber's bounded deque and sets an event. A subscriber whose deque is
full is switched to *catch-up*: its buffer is dropped and its own task reads
the log by position, in pages, until it reaches the head, then rejoins the
live feed. Positions decide everything (what was delivered, what the buffer
covers), so the switch neither loses, repeats nor reorders an event, and the
writer never waits for anyone.

Events committed by another process are not announced here. The bus polls
``store.head()`` every ``poll_interval`` seconds (a store with
``wait_for_head``, i.e. PostgreSQL's LISTEN/NOTIFY, wakes it at once
instead); a live subscriber that missed positions another process wrote is
switched to catch-up. To tell "another process wrote" from "our writer has
committed but not yet announced", a head above what was announced counts
only after a short grace (10 ms). So events from another process reach
subscribers within ``poll_interval`` + 10 ms + one read (about 0.1 s by
default on SQLite; a few ms on PostgreSQL), while this process's own events
are handed over on commit.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Self

import anyio
import structlog

from runtime._projection_errors import ProjectionConfigError, ProjectorNotRunning
from runtime._projection_types import BusStatistics, Page
from stores import EventStore, RecordedEvent

__all__ = ["BusStatistics", "EventBus", "Page", "Subscription"]

_log = structlog.get_logger("runtime.bus")

GAP_GRACE = 0.01
"""Seconds the poller waits for a local announcement before treating a head as foreign."""


class Subscription:
    """A position-ordered feed of committed events; iterate it with ``async for``.

    Made by :meth:`EventBus.subscribe`. Each iteration returns a :class:`Page`.
    The iteration ends when the subscription or the bus closes.
    """

    def __init__(
        self,
        bus: EventBus,
        after: int,
        types: Collection[str] | None,
        categories: Collection[str] | None,
        buffer_size: int,
        page_size: int,
        max_batch: int,
    ) -> None:
        self._bus = bus
        self._types = None if types is None else frozenset(types)
        self._categories = None if categories is None else frozenset(categories)
        self._buffer: deque[RecordedEvent] = deque()
        self._buffer_size = buffer_size
        self._page_size = page_size
        self._max_batch = max_batch
        self._position = after  # the last position handed to the consumer
        self._buffered_to = after  # live mode: positions up to here are in the buffer
        self._live = False  # start by reading the log from `after`
        self._closed = False
        self._wakeup = anyio.Event()
        # Called on the writer's task after each live offer (see _offer): lets
        # a consumer take the page at once instead of one loop turn later.
        self._on_offer: Callable[[], None] | None = None

    @property
    def position(self) -> int:
        """The last position delivered to the consumer."""
        return self._position

    @property
    def live(self) -> bool:
        """True while the subscription follows the live feed (False: reading the log)."""
        return self._live

    def _wanted(self, event: RecordedEvent) -> bool:
        if self._types is not None and event.type not in self._types:
            return False
        return self._categories is None or event.stream.partition("-")[0] in self._categories

    def _to_catch_up(self) -> None:
        # The consumer re-reads everything after what it received, so the
        # dropped buffer costs a read, never an event.
        self._live = False
        self._buffer.clear()
        self._wakeup.set()

    def _offer(self, events: Sequence[RecordedEvent]) -> None:
        """Take a committed batch (called on the writer's task: never blocks)."""
        if self._closed:
            return
        if not self._live:
            self._wakeup.set()
            return
        if events[-1].position <= self._buffered_to:
            return
        if events[0].position > self._buffered_to + 1:
            self._bus._gaps += 1
            self._to_catch_up()
            return
        buffer = self._buffer
        covered = self._buffered_to
        for event in events:
            if event.position <= covered:
                continue  # already read from the log before rejoining
            if self._wanted(event):
                if len(buffer) >= self._buffer_size:
                    self._bus._overflows += 1
                    self._to_catch_up()
                    return
                buffer.append(event)
        self._buffered_to = events[-1].position
        if self._on_offer is not None:
            try:
                self._on_offer()
            except Exception:  # the commit listener must not raise (the append succeeded)
                _log.warning("subscription offer hook failed", exc_info=True)
        if buffer or self._buffered_to > self._position:
            self._wakeup.set()  # something is left for the consumer's task

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Page:
        """Wait for and return the next page (wanted events and the position covered)."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._live:
                page = self._take_live()
                if page is not None:
                    return page
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            page = await self._read_log()
            if page is not None:
                return page

    def _take_live(self) -> Page | None:
        buffer = self._buffer
        if buffer:
            count = min(len(buffer), self._max_batch)
            events = [buffer.popleft() for _ in range(count)]
            position = events[-1].position if buffer else self._buffered_to
            self._position = position
            return Page(events, position, live=True)
        if self._buffered_to > self._position:
            self._position = self._buffered_to
            return Page((), self._position, live=True)
        return None

    async def _read_log(self) -> Page | None:
        store = self._bus.store
        after = self._position
        # Read the head first: every event at or below it is committed and,
        # by the store's global-order guarantee, visible to the read below.
        head = await store.head()
        events = await store.read_all(
            after, self._page_size, types=self._types, categories=self._categories
        )
        if self._closed or self._live or self._position != after:
            return None  # closed, or state changed while we awaited
        full = len(events) >= self._page_size
        if full:
            covered = events[-1].position
        else:
            covered = max(head, events[-1].position if events else after)
            # Rejoin only when everything the store has announced is covered:
            # later announcements then continue exactly where the log read ended.
            if covered >= self._bus._announced:
                self._live = True
                self._buffered_to = covered
        if covered <= after:
            return None
        self._position = covered
        return Page(events, covered)

    def close(self) -> None:
        """Stop the subscription; a waiting ``async for`` ends."""
        self._closed = True
        self._buffer.clear()
        self._wakeup.set()


class EventBus:
    """Hands committed events to subscribers in global-position order.

    Use as ``async with EventBus(store) as bus:`` inside the store's block;
    the bus owns its polling task inside its own block.

    Args:
        store: The event store to follow.
        buffer_size: Default live buffer per subscriber, in events; past it
            the subscriber reads from the log instead.
        page_size: Default catch-up page size, in events.
        poll_interval: Seconds between polls of ``store.head()`` (finds
            events written by other processes; ``math.inf`` disables polling).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        buffer_size: int = 10_000,
        page_size: int = 1000,
        poll_interval: float = 0.1,
    ) -> None:
        for label, value in (("buffer_size", buffer_size), ("page_size", page_size)):
            if type(value) is not int or value < 1:
                raise ProjectionConfigError(f"{label} must be a positive int, not {value!r}")
        if not poll_interval > 0:
            raise ProjectionConfigError(f"poll_interval must be > 0, not {poll_interval!r}")
        self.store = store
        self._buffer_size = buffer_size
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._subscriptions: list[Subscription] = []
        self._announced = 0  # highest position announced by the store's listener
        self._polled = 0  # highest head seen by polling
        self._last_recorded_at: datetime | None = None
        self._overflows = 0
        self._gaps = 0
        self._remove_listener: Callable[[], None] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._open = False

    @property
    def head(self) -> int:
        """The highest position the bus knows to be committed."""
        return max(self._announced, self._polled)

    @property
    def last_recorded_at(self) -> datetime | None:
        """The commit time of the latest event announced by the store, if any."""
        return self._last_recorded_at

    def _on_commit(self, events: Sequence[RecordedEvent]) -> None:
        # Runs on the store's writer task right after COMMIT: no awaiting here.
        if not events:
            return
        self._announced = max(self._announced, events[-1].position)
        self._last_recorded_at = events[-1].recorded_at
        for subscription in self._subscriptions:
            subscription._offer(events)

    async def __aenter__(self) -> Self:
        self._polled = await self.store.head()
        self._remove_listener = self.store.add_commit_listener(self._on_commit)
        self._open = True
        if math.isfinite(self._poll_interval):
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            self._task_group.start_soon(self._poll)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._open = False
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for subscription in list(self._subscriptions):
            subscription.close()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            tg, self._task_group = self._task_group, None
            return await tg.__aexit__(exc_type, exc, tb)
        return None

    async def _next_head(self) -> int:
        # A store that can be woken by other processes' commits (PostgreSQL's
        # LISTEN/NOTIFY: `wait_for_head`) is waited on; any other is polled.
        wait_for_head = getattr(self.store, "wait_for_head", None)
        if wait_for_head is not None:
            return int(await wait_for_head(self.head, self._poll_interval))
        await anyio.sleep(self._poll_interval)
        return await self.store.head()

    async def _poll(self) -> None:
        while True:
            try:
                head = await self._next_head()
            except Exception:
                _log.warning("head poll failed", exc_info=True)
                await anyio.sleep(self._poll_interval)
                continue
            self._polled = max(self._polled, head)
            if self._announced >= head:
                continue
            # Our own writer announces right after its COMMIT; give it a moment
            # (GAP_GRACE) before deciding that another process wrote these events.
            await anyio.sleep(GAP_GRACE)
            if self._announced >= head:
                continue
            for subscription in self._subscriptions:
                if subscription._live and subscription._buffered_to < head:
                    self._gaps += 1
                    subscription._to_catch_up()

    def subscribe(
        self,
        after: int = 0,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        buffer_size: int | None = None,
        page_size: int | None = None,
        max_batch: int | None = None,
    ) -> AbstractAsyncContextManager[Subscription]:
        """Open a subscription to every wanted event after ``after``.

        It starts by reading the log from ``after`` and joins the live feed
        once it reaches the head.

        Args:
            after: Deliver events with a position above this one.
            types: Only these event type names (None: all).
            categories: Only these stream categories (None: all).
            buffer_size: This subscriber's live buffer (default: the bus's).
            page_size: This subscriber's catch-up page size (default: the bus's).
            max_batch: The most events in one page from the live buffer
                (default: the page size).

        Returns:
            An async context manager handing back the :class:`Subscription`.

        Raises:
            ProjectorNotRunning: the bus is not open.
            ProjectionConfigError: a size is not a positive int or ``after`` is negative.
        """
        if not self._open:
            raise ProjectorNotRunning("the event bus is not open (use `async with EventBus(...)`)")
        if type(after) is not int or after < 0:
            raise ProjectionConfigError(f"after must be an int >= 0, not {after!r}")
        sizes = (buffer_size, page_size, max_batch)
        if any(v is not None and (type(v) is not int or v < 1) for v in sizes):
            raise ProjectionConfigError(f"sizes must be positive ints, not {sizes!r}")
        pages = page_size or self._page_size
        subscription = Subscription(
            self,
            after,
            types,
            categories,
            buffer_size or self._buffer_size,
            pages,
            max_batch or pages,
        )
        return self._subscription(subscription)

    @asynccontextmanager
    async def _subscription(self, subscription: Subscription) -> AsyncIterator[Subscription]:
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def statistics(self) -> BusStatistics:
        """An immutable snapshot of the bus's counters."""
        return BusStatistics(
            head=self.head,
            subscribers=len(self._subscriptions),
            live=sum(1 for s in self._subscriptions if s._live),
            overflows=self._overflows,
            gaps=self._gaps,
        )
