"""The event bus: position order, catch-up, overflow, filters, foreign writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from runtime._bus import EventBus, Subscription
from runtime._projection_errors import ProjectionConfigError, ProjectorNotRunning
from stores import ANY, EventStore, MemoryStore, NewEvent, RecordedEvent, SQLiteStore
from tests.runtime_child import wait_until


class QuietStore(MemoryStore):
    """A memory store whose announcements can be switched off (a 'foreign' writer)."""

    quiet = False

    def _announce(self, events: Sequence[RecordedEvent]) -> None:
        if not self.quiet:
            super()._announce(events)


async def write(
    store: MemoryStore, count: int, type: str = "T.Happened", stream: str = "S-1"
) -> int:
    """Append ``count`` single-event appends; return the last position."""
    last = 0
    for i in range(count):
        result = await store.append(stream, [NewEvent(type, {"i": i})], ANY)
        last = result.positions[-1]
    return last


async def collect(subscription: Subscription, until: int) -> tuple[list[int], list[int]]:
    """Pages' event positions and page positions until ``until`` is covered."""
    events: list[int] = []
    pages: list[int] = []
    with anyio.fail_after(10):
        async for page in subscription:
            events.extend(e.position for e in page.events)
            pages.append(page.position)
            if page.position >= until:
                break
    return events, pages


@pytest.mark.anyio
async def test_live_events_arrive_in_position_order() -> None:
    """A live subscriber gets every committed event once, in position order."""
    async with MemoryStore() as store, EventBus(store) as bus, bus.subscribe() as sub:
        last = await write(store, 50)
        events, _ = await collect(sub, last)
    assert events == list(range(1, 51))


@pytest.mark.anyio
async def test_catch_up_from_log_then_live() -> None:
    """A subscriber starting behind reads the log in pages, then follows the live feed."""
    async with MemoryStore() as store, EventBus(store, page_size=100) as bus:
        await write(store, 450)
        async with bus.subscribe(after=120) as sub:
            events, _ = await collect(sub, 450)
            assert sub.live
            last = await write(store, 30)
            more, _ = await collect(sub, last)
    assert events + more == list(range(121, 481))


@pytest.mark.anyio
async def test_overflow_switches_to_log_without_loss_or_duplicates() -> None:
    """A subscriber not reading while a burst is written loses, repeats and reorders nothing."""
    async with MemoryStore() as store, EventBus(store, buffer_size=8, page_size=16) as bus:
        async with bus.subscribe() as sub:
            events, _ = await collect(sub, await write(store, 3))
            assert sub.live
            # The subscriber is not iterating: every append still completes.
            last = await write(store, 500)
            assert not sub.live  # its buffer overflowed: it will read the log
            rest, _ = await collect(sub, last)
            assert sub.live  # and it rejoined the live feed at the head
            tail, _ = await collect(sub, await write(store, 5))
        assert bus.statistics().overflows >= 1
    assert events + rest + tail == list(range(1, 509))


@pytest.mark.anyio
async def test_filtered_subscription_covers_unwanted_positions() -> None:
    """Pages of a filtered subscriber advance their position across unwanted events."""
    async with MemoryStore() as store, EventBus(store, page_size=50) as bus:
        await write(store, 3, type="Want.It")
        await write(store, 300, type="Other.Thing")
        async with bus.subscribe(types=["Want.It"]) as sub:
            events, pages = await collect(sub, 303)
            live_last = await write(store, 40, type="Other.Thing")
            live_events, live_pages = await collect(sub, live_last)
    assert events == [1, 2, 3]
    assert pages[-1] == 303
    assert live_events == []
    assert live_pages[-1] == 343


@pytest.mark.anyio
async def test_category_filter() -> None:
    """A category filter keeps only streams of that category, live and from the log."""
    async with MemoryStore() as store, EventBus(store) as bus:
        await write(store, 2, stream="Account-1")
        await write(store, 2, stream="Order-1")
        async with bus.subscribe(categories=["Order"]) as sub:
            events, _ = await collect(sub, 4)
            await write(store, 1, stream="Account-2")
            more, _ = await collect(sub, await write(store, 1, stream="Order-2"))
    assert events + more == [3, 4, 6]


@pytest.mark.anyio
async def test_unannounced_writes_are_found_by_polling() -> None:
    """Events committed without an announcement (another process) reach a live subscriber."""
    async with QuietStore() as store, EventBus(store, poll_interval=0.01) as bus:
        async with bus.subscribe() as sub:
            events, _ = await collect(sub, await write(store, 2))
            store.quiet = True
            last = await write(store, 3)
            quiet, _ = await collect(sub, last)
            store.quiet = False
            loud, _ = await collect(sub, await write(store, 2))
        assert bus.statistics().gaps >= 1
    assert events + quiet + loud == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.anyio
async def test_gap_in_announcements_switches_to_log() -> None:
    """An announcement that skips positions sends the subscriber to the log for the gap."""
    async with (
        QuietStore() as store,
        EventBus(store, poll_interval=3600) as bus,
        bus.subscribe() as sub,
    ):
        await collect(sub, await write(store, 1))
        store.quiet = True
        await write(store, 2)
        store.quiet = False
        events, _ = await collect(sub, await write(store, 1))
    assert events == [2, 3, 4]


@pytest.mark.anyio
async def test_sqlite_store_events_reach_subscriber_only_after_commit(tmp_path: Path) -> None:
    """With the SQLite store every delivered event is already readable from the log."""
    async with (
        SQLiteStore(tmp_path / "events.db") as store,
        EventBus(store) as bus,
        bus.subscribe() as sub,
    ):
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(store.append, f"S-{n}", [NewEvent("T.A", {})] * 5, ANY)
        with anyio.fail_after(10):
            seen: list[int] = []
            async for page in sub:
                for event in page.events:
                    stored = await store.read_all(event.position - 1, 1)
                    assert stored[0].event_id == event.event_id
                    seen.append(event.position)
                if page.position >= 100:
                    break
    assert seen == list(range(1, 101))


@pytest.mark.anyio
async def test_subscribe_needs_an_open_bus_and_valid_arguments() -> None:
    """Subscribing to a closed bus or with bad sizes raises a typed error."""
    async with MemoryStore() as store:
        bus = EventBus(store)
        with pytest.raises(ProjectorNotRunning):
            bus.subscribe()
        async with bus:
            with pytest.raises(ProjectionConfigError):
                bus.subscribe(after=-1)
            with pytest.raises(ProjectionConfigError):
                bus.subscribe(buffer_size=0)
        with pytest.raises(ProjectionConfigError):
            EventBus(store, page_size=0)


@pytest.mark.anyio
async def test_closing_the_bus_ends_subscriptions() -> None:
    """A subscriber waiting on the live feed ends its iteration when the bus closes."""
    subscribed, ended = anyio.Event(), anyio.Event()

    async def consume(bus: EventBus) -> None:
        async with bus.subscribe() as sub:
            subscribed.set()
            async for _ in sub:
                pass
        ended.set()

    async with MemoryStore() as store, anyio.create_task_group() as tg:
        async with EventBus(store) as bus:
            tg.start_soon(consume, bus)
            await subscribed.wait()
            await write(store, 1)
            assert not ended.is_set()
        with anyio.fail_after(5):
            await ended.wait()


@pytest.mark.anyio
async def test_many_subscribers_under_concurrent_group_commits(tmp_path: Path) -> None:
    """Subscribers of differing speeds each see every position once, in order."""
    async with (
        SQLiteStore(tmp_path / "events.db") as store,
        EventBus(store, buffer_size=20, page_size=30) as bus,
    ):
        results: dict[int, list[int]] = {}
        subscriptions: list[Subscription] = []
        writers_done = anyio.Event()

        async def consume(index: int, until: int) -> None:
            got: list[int] = []
            async with bus.subscribe() as sub:
                subscriptions.append(sub)
                async for page in sub:
                    got.extend(e.position for e in page.events)
                    if index == 3:
                        # The slowest takes one page, then nothing until every
                        # write is in: 360 events against a buffer of 20 overflow it.
                        await writers_done.wait()
                    for _ in range(index * 3):  # slower subscribers fall behind
                        await anyio.lowlevel.checkpoint()
                    if page.position >= until:
                        break
            results[index] = got

        total = 30 * 4 * 3
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for index in range(4):
                    tg.start_soon(consume, index, total)
                # Every subscriber follows the live feed before the first write.
                await wait_until(
                    lambda: len(subscriptions) == 4 and all(s.live for s in subscriptions)
                )
                async with anyio.create_task_group() as writers:
                    for w in range(30):
                        for _ in range(4):
                            writers.start_soon(
                                store.append, f"W-{w}", [NewEvent("T.A", {})] * 3, ANY
                            )
                writers_done.set()
        assert bus.statistics().overflows >= 1
    assert all(got == list(range(1, total + 1)) for got in results.values())
    assert len(results) == 4


@asynccontextmanager
async def two_handles(backend: str, tmp_path: Path) -> AsyncIterator[tuple[EventStore, EventStore]]:
    """Two independent open stores on one database (as two processes would have)."""
    if backend == "sqlite":
        async with (
            SQLiteStore(tmp_path / "events.db") as first,
            SQLiteStore(tmp_path / "events.db") as second,
        ):
            yield first, second
        return
    from tests import pg

    schema = pg.new_schema()
    try:
        async with await pg.new_store(schema) as first, await pg.new_store(schema) as second:
            yield first, second
    finally:
        await pg.drop_schema(schema)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_writes_through_another_handle_reach_subscribers(
    backend: str, tmp_path: Path
) -> None:
    """Events another writer commits to the same database reach a live subscriber, in order."""
    async with two_handles(backend, tmp_path) as (mine, other), EventBus(mine) as bus:
        async with bus.subscribe() as sub:
            await mine.append("Mine-1", [NewEvent("T.A", {})], 0)
            first, _ = await collect(sub, 1)
            assert sub.live
            await other.append("Other-1", [NewEvent("T.A", {})] * 3, 0)
            await mine.append("Mine-1", [NewEvent("T.A", {})], 1)
            await other.append("Other-1", [NewEvent("T.A", {})], 3)
            rest, _ = await collect(sub, 6)
        assert bus.statistics().gaps >= 1
    assert first + rest == [1, 2, 3, 4, 5, 6]
