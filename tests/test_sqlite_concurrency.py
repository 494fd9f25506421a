"""SQLiteStore under cancellation and load: all-or-nothing appends, contiguous blocks, tailing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from stores import ANY, NewEvent, RecordedEvent, SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLiteStore on a fresh file."""
    async with SQLiteStore(tmp_path / "events.db") as s:
        yield s


@pytest.mark.anyio
async def test_cancelled_appends_are_all_or_nothing_and_the_store_stays_usable(
    store: SQLiteStore,
) -> None:
    """Callers cancelled mid-append leave each append fully present or absent, never half."""
    acknowledged: set[int] = set()
    cancelled: list[int] = []

    async def one(i: int) -> None:
        try:
            await store.append(
                f"Acc-{i}",
                [NewEvent("T", {"i": i, "j": j}) for j in range(3)],
                0,
                command_id=f"c-{i}",
            )
        except anyio.get_cancelled_exc_class():
            cancelled.append(i)
            raise
        acknowledged.add(i)

    with anyio.CancelScope() as scope:

        def cancel_after_first_commit(events: Sequence[RecordedEvent]) -> None:
            scope.cancel()

        remove = store.add_commit_listener(cancel_after_first_commit)
        async with anyio.create_task_group() as tg:
            for i in range(400):
                tg.start_soon(one, i)
    remove()
    assert cancelled  # the test really cancelled callers mid-append
    # The store is still usable. This append queues behind any batch that
    # was already on the writer's thread when its callers were cancelled
    # (such a batch still commits), so after it the log is settled.
    result = await store.append("Acc-after", [NewEvent("T", {})], 0)
    stored = await store.read_all(0, 10_000)
    assert [e.position for e in stored] == list(range(1, len(stored) + 1))
    assert stored[-1].stream == "Acc-after"
    assert result.positions == range(len(stored), len(stored) + 1)
    assert store.statistics().events == len(stored)
    for i in range(400):
        events = await store.read_stream(f"Acc-{i}")
        record = await store.find_command(f"c-{i}")
        assert len(events) in (0, 3), i
        assert (record is not None) == (len(events) == 3), i
        if i in acknowledged:
            assert len(events) == 3
        if events:
            positions = [e.position for e in events]
            assert positions == list(range(positions[0], positions[0] + 3))
            assert record is not None
            assert record.positions == range(positions[0], positions[0] + 3)


@pytest.mark.anyio
@pytest.mark.slow
async def test_two_large_appends_get_non_interleaved_position_blocks(store: SQLiteStore) -> None:
    """Two 10,000-event appends made at the same moment get contiguous, disjoint positions."""
    results = {}

    async def big(name: str) -> None:
        events = [NewEvent("T", {"n": name, "i": i}) for i in range(10_000)]
        results[name] = await store.append(f"Big-{name}", events, 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(big, "a")
        tg.start_soon(big, "b")
    a, b = results["a"].positions, results["b"].positions
    assert len(a) == len(b) == 10_000
    assert set(a).isdisjoint(b)
    assert sorted([a.start, b.start]) == [1, 10_001]
    for name, block in results.items():
        stored = await store.read_stream(f"Big-{name}")
        assert [e.position for e in stored] == list(block.positions)
        assert [e.data["i"] for e in stored] == list(range(10_000))


@pytest.mark.anyio
@pytest.mark.slow
async def test_tailing_reader_sees_every_position_once_in_order(store: SQLiteStore) -> None:
    """A reader polling read_all while 10 writers append 10,000 events sees 1..10,000 in order."""
    total, writers = 10_000, 10
    seen: list[int] = []

    async def writer(w: int) -> None:
        for i in range(total // writers // 2):
            await store.append(f"W-{w}-{i % 13}", [NewEvent("T", {"w": w}), NewEvent("T", {})], ANY)

    async def tail() -> None:
        after = 0
        while after < total:
            page = await store.read_all(after, 700)
            seen.extend(e.position for e in page)
            if page:
                after = page[-1].position
            else:
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(tail)
        for w in range(writers):
            tg.start_soon(writer, w)
    assert seen == list(range(1, total + 1))


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_an_append_cancelled_before_its_batch_is_dropped(tmp_path: Path, writer: str) -> None:
    """A caller that gives up while its append still waits in the queue leaves nothing."""
    async with SQLiteStore(tmp_path / "events.db", writer=writer) as store:
        futures = [store.start_append(f"Acc-{i}", [NewEvent("T", {})], 0) for i in range(40)]
        for future in futures[::3]:  # before the writer takes the queue
            future.cancel()
        kept = [f for f in futures if not f.cancelled()]
        results = await asyncio.gather(*kept)
        assert [r.stream for r in results] == [f"Acc-{i}" for i in range(40) if i % 3]
        assert sorted(e.stream for e in await store.read_all()) == sorted(r.stream for r in results)
        assert store.statistics().appends == len(kept)


@pytest.mark.anyio
async def test_batches_stop_at_max_batch_appends_and_max_batch_events(tmp_path: Path) -> None:
    """A queue larger than a batch's limits commits as several batches within them."""
    async with SQLiteStore(
        tmp_path / "events.db", writer="thread", max_batch_appends=7, max_batch_events=10
    ) as store:
        await asyncio.gather(*(store.append(f"Acc-{i}", [NewEvent("T", {})], 0) for i in range(30)))
        first = store.statistics()
        assert first.max_batch == 7
        three = [NewEvent("T", {"n": n}) for n in range(3)]
        await asyncio.gather(*(store.append(f"Ord-{i}", three, 0) for i in range(30)))
        second = store.statistics()
        assert second.appends == 60
        # At most 3 appends of 3 events fit under 10 events: 30 appends, 10 batches.
        assert second.batches - first.batches == 10
        assert second.batch_sizes[2] - first.batch_sizes.get(2, 0) == 10  # 2-3 appends each
