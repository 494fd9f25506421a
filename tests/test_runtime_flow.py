"""Ordering, concurrency, backpressure, timeouts and shutdown of the runtime (MemoryStore)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from runtime import (
    ActorStopped,
    Address,
    AskTimeout,
    Outcome,
    Overloaded,
    Runtime,
    RuntimeClosed,
)
from stores import AppendResult, MemoryStore, NewEvent
from tests.runtime_child import Append, Dump, Seq, SnapSeq, wait_until

pytestmark = pytest.mark.anyio

SEQ = Address("Seq", "1")


class GatedStore(MemoryStore):
    """A MemoryStore whose appends wait until ``gate`` is set, counting those waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.waiting = 0
        self.peak = 0

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: Any,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().append(
            stream, events, expected_version, command_id=command_id, reply=reply
        )


async def test_burst_to_one_actor_applies_in_send_order_and_replays() -> None:
    """10,000 commands sent at once to one actor apply in send order; a replay agrees."""
    store = MemoryStore()
    count = 10_000
    async with Runtime(aggregates=[Seq], store=store, mailbox_size=100) as rt:
        futures: list[asyncio.Future[Outcome] | None] = []
        for i in range(count):
            try:
                futures.append(rt.ask_nowait(SEQ, Append(n=i)))
            except Overloaded:
                # The mailbox is full: wait for room like ask does (still in order).
                futures.append(None)
                await rt.ask(SEQ, Append(n=i))
        for f in futures:
            if f is not None:
                await f
        live = (await rt.ask(SEQ, Dump())).value["items"]
        assert live == list(range(count))
        assert [e.data["n"] for e in await store.read_stream("Seq-1")] == live
        replayed = await rt.load(SEQ)
        assert isinstance(replayed, Seq)
        assert replayed.items == live


async def test_burst_of_waiting_asks_keeps_order() -> None:
    """Asks that wait for room in a full mailbox still enter it in arrival order."""
    async with Runtime(aggregates=[Seq], store=MemoryStore(), mailbox_size=4) as rt:
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(rt.ask, SEQ, Append(n=i))
        assert (await rt.ask(SEQ, Dump())).value["items"] == list(range(500))


async def test_turns_of_different_actors_overlap() -> None:
    """Two actors' appends are in flight at once (actors are not serialised globally)."""
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.ask, Address("Seq", "a"), Append(n=1))
            tg.start_soon(rt.ask, Address("Seq", "b"), Append(n=2))
            await wait_until(lambda: store.waiting == 2)
            store.gate.set()
        assert store.peak == 2


async def test_one_actor_runs_one_command_at_a_time() -> None:
    """Commands to one address never overlap: one append in flight at a time."""
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(rt.ask, SEQ, Append(n=i))
            await wait_until(lambda: store.waiting == 1)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            assert store.waiting == 1
            store.gate.set()
        assert store.peak == 1


async def test_full_mailbox_backpressure() -> None:
    """At a full mailbox ask waits for room and ask_nowait/tell raise or dead-letter Overloaded."""
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store, mailbox_size=2) as rt:
        first = rt.ask_nowait(SEQ, Append(n=0))
        await wait_until(lambda: store.waiting == 1)  # taken out of the mailbox, running
        queued = [rt.ask_nowait(SEQ, Append(n=i)) for i in (1, 2)]
        with pytest.raises(Overloaded):
            rt.ask_nowait(SEQ, Append(n=99))
        rt.tell(SEQ, Append(n=98))
        assert isinstance(rt.dead_letters()[0].error, Overloaded)
        done: list[int] = []

        async def waiting_ask() -> None:
            out = await rt.ask(SEQ, Append(n=3))
            done.append(out.version)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting_ask)
            await wait_until(lambda: rt.statistics().mailbox_max == 3)
            assert done == []
            store.gate.set()
        assert [(await f).version for f in [first, *queued]] == [1, 2, 3]
        assert done == [4]
        assert (await rt.ask(SEQ, Dump())).value["items"] == [0, 1, 2, 3]


async def test_ask_timeout_and_the_command_may_still_complete() -> None:
    """An ask past its timeout raises AskTimeout, and the command still completes later."""
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        with pytest.raises(AskTimeout, match="may still complete"):
            await rt.ask(SEQ, Append(n=1), timeout=0.05)
        store.gate.set()
        assert (await rt.ask(SEQ, Dump())).value["items"] == [1]
    assert AskTimeout.__doc__ is not None
    assert "may still complete" in AskTimeout.__doc__


async def test_shutdown_fails_pending_asks_with_actor_stopped() -> None:
    """Leaving the runtime past shutdown_timeout fails pending asks with ActorStopped."""
    store = GatedStore()
    results: list[Any] = []

    async def asker(n: int) -> None:
        try:
            results.append(await rt.ask(SEQ, Append(n=n), timeout=None))
        except ActorStopped as exc:
            results.append(exc)

    async with (
        anyio.create_task_group() as tg,
        Runtime(aggregates=[Seq], store=store, shutdown_timeout=0.05) as rt,
    ):
        for n in range(3):
            tg.start_soon(asker, n)
        await wait_until(lambda: store.waiting == 1)
    assert len(results) == 3
    assert all(isinstance(r, ActorStopped) for r in results)
    with pytest.raises(RuntimeClosed):
        await rt.ask(SEQ, Append(n=9))


async def test_shutdown_drains_queued_commands() -> None:
    """Commands queued when the block exits still run and are acknowledged."""
    store = MemoryStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        futures = [rt.ask_nowait(Address("Seq", str(i % 7)), Append(n=i)) for i in range(200)]
    assert all(f.done() and not f.exception() for f in futures)
    assert store.statistics().events == 200


commands = st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(commands, min_size=1, max_size=4), snapshots=st.booleans())
@pytest.mark.anyio
async def test_state_from_replay_equals_live_state(
    batches: list[list[int]], snapshots: bool
) -> None:
    """Property: the state rebuilt from the log (with or without snapshots) equals the live one."""
    kind = SnapSeq if snapshots else Seq
    addr = Address(kind.category, "p")
    store = MemoryStore()
    async with Runtime(aggregates=[kind], store=store) as rt:
        for batch in batches:
            for n in batch:
                await rt.ask(addr, Append(n=n))
            live = (await rt.ask(addr, Dump())).value
            replayed = await rt.load(addr)
            assert {"items": replayed.items, "blobs": replayed.blobs} == live  # type: ignore[attr-defined]
            rt.passivate(addr)
            assert (await rt.ask(addr, Dump())).value == live


async def test_body_exception_propagates_unchanged_after_draining() -> None:
    """An exception leaving the block is re-raised as is (not grouped), after the drain."""
    store = MemoryStore()

    async def body() -> None:
        async with Runtime(aggregates=[Seq], store=store) as rt:
            for n in range(50):
                rt.tell(SEQ, Append(n=n))
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        await body()
    assert store.statistics().events == 50


async def test_cancelled_body_still_drains() -> None:
    """A block cancelled from outside still runs its queued commands before closing."""
    store = SlowStore()
    with anyio.move_on_after(0.01):
        async with Runtime(aggregates=[Seq], store=store) as rt:
            for n in range(50):
                rt.tell(SEQ, Append(n=n))
            await anyio.sleep(10)
    assert store.statistics().events == 50
    assert rt.statistics().commands == 50


class SlowStore(MemoryStore):
    """A MemoryStore whose appends take a few milliseconds."""

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: Any,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        await anyio.sleep(0.002)
        return await super().append(
            stream, events, expected_version, command_id=command_id, reply=reply
        )


async def test_ask_timed_out_before_entering_the_mailbox_never_runs() -> None:
    """An ask that times out while waiting for room is dropped: its command never runs."""
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store, mailbox_size=1) as rt:
        running = rt.ask_nowait(SEQ, Append(n=0))
        await wait_until(lambda: store.waiting == 1)
        queued = rt.ask_nowait(SEQ, Append(n=1))
        with pytest.raises(AskTimeout):
            await rt.ask(SEQ, Append(n=2), timeout=0.02)
        store.gate.set()
        assert [(await running).version, (await queued).version] == [1, 2]
        assert (await rt.ask(SEQ, Dump())).value["items"] == [0, 1]


class StuckSnapshots(MemoryStore):
    """A MemoryStore whose snapshot saves never finish."""

    async def save_snapshot(self, *args: Any, **kwargs: Any) -> None:
        await anyio.sleep_forever()


async def test_snapshots_are_written_off_the_command_path() -> None:
    """A snapshot save that never finishes delays no command."""
    store = StuckSnapshots()
    async with Runtime(aggregates=[SnapSeq], store=store, shutdown_timeout=0.05) as rt:
        address = Address("SnapSeq", "1")
        for n in range(10):
            await rt.ask(address, Append(n=n))  # snapshots are due at 3, 6 and 9
        assert (await rt.ask(address, Dump())).value["items"] == list(range(10))
        assert rt.statistics().snapshots == 0
