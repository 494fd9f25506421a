"""The turns' fast path: appends started without a coroutine, few workers, no head-of-line waits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aggregates import Aggregate, Command, handles
from runtime import ActorStopped, Address, Outcome, Runtime
from runtime._write import native_start
from stores import (
    AppendResult,
    ExpectedVersion,
    MemoryStore,
    NewEvent,
    PostgresStore,
    SQLiteStore,
)
from tests.runtime_child import Append, Dump, Seq, wait_until

pytestmark = pytest.mark.anyio


class HeldStore(MemoryStore):
    """A MemoryStore whose appends (started either way) commit only when released."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[asyncio.Future[AppendResult], tuple[Any, ...]]] = []
        self.hold = True

    def start_append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> asyncio.Future[AppendResult]:
        if not self.hold:
            return super().start_append(
                stream, events, expected_version, command_id=command_id, reply=reply
            )
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self.held.append((future, (stream, events, expected_version, command_id, reply)))
        return future

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        return await self.start_append(
            stream, events, expected_version, command_id=command_id, reply=reply
        )

    def release(self) -> None:
        """Commit every held append, in the order they were started."""
        self.hold = False
        held, self.held = self.held, []
        for future, (stream, events, expected, command_id, reply) in held:
            try:
                future.set_result(self._append_now(stream, events, expected, command_id, reply))
            except Exception as exc:  # e.g. StoreClosed, as a real store fails what it holds
                future.set_exception(exc)


class AwaitedAppends(MemoryStore):
    """Overrides ``append`` only: the runtime must still call it for every command."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def append(self, *args: Any, **kwargs: Any) -> AppendResult:
        self.calls += 1
        return await super().append(*args, **kwargs)


class GatedActivation(MemoryStore):
    """Replay reads wait for ``gate`` (holds one actor's activation open)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.gate.set()
        self.waiting = 0

    async def read_stream_payloads(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().read_stream_payloads(*args, **kwargs)


def test_native_start_is_used_only_where_the_class_defines_both(tmp_path: Path) -> None:
    """A store's own start_append is used; one that overrides append alone keeps append."""
    for store in (MemoryStore(), SQLiteStore(tmp_path / "e.db"), PostgresStore("postgresql://x")):
        assert native_start(store) is not None
    assert native_start(HeldStore()) is not None
    assert native_start(AwaitedAppends()) is None


async def test_a_store_overriding_append_alone_sees_every_append() -> None:
    """With append overridden (and no start_append of its own), every command goes through it."""
    store = AwaitedAppends()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        for n in range(5):
            await rt.ask(Address("Seq", str(n % 2)), Append(n=n))
    assert store.calls == 5
    assert store.statistics().events == 5


async def test_many_appends_in_flight_need_few_workers() -> None:
    """A worker starts an append and moves on: 200 actors' appends are in flight on 1-2 workers."""
    store = HeldStore()
    addresses = [Address("Seq", str(i)) for i in range(200)]
    async with Runtime(aggregates=[Seq], store=store) as rt:
        store.hold = False
        for address in addresses:  # activate them (activation awaits reads)
            await rt.ask(address, Dump())
        store.hold = True
        futures = [rt.ask_nowait(address, Append(n=i)) for i, address in enumerate(addresses)]
        await wait_until(lambda: len(store.held) == 200)
        assert rt.statistics().workers <= 2
        assert not any(f.done() for f in futures)
        store.release()
        outcomes: list[Outcome] = [await f for f in futures]
        assert [o.version for o in outcomes] == [1] * 200
        assert [o.positions[0] for o in outcomes] == list(range(1, 201))


async def test_commands_to_one_actor_wait_for_its_append_in_flight() -> None:
    """The next command of an actor runs only after its previous append committed, in order."""
    store = HeldStore()
    seq = Address("Seq", "1")
    async with Runtime(aggregates=[Seq], store=store) as rt:
        store.hold = False
        await rt.ask(seq, Dump())
        store.hold = True
        futures = [rt.ask_nowait(seq, Append(n=n)) for n in range(3)]
        await wait_until(lambda: len(store.held) == 1)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert len(store.held) == 1  # the second waits for the first's commit
        for expected in (1, 2, 3):
            await wait_until(lambda: len(store.held) == 1)
            store.release()
            store.hold = True
            assert (await futures[expected - 1]).version == expected
        store.hold = False
        assert (await rt.ask(seq, Dump())).value["items"] == [0, 1, 2]


async def test_a_turn_awaiting_io_does_not_hold_up_other_actors() -> None:
    """While one actor's activation waits on a read, a warm actor's commands still complete."""
    store = GatedActivation()
    warm, cold = Address("Seq", "warm"), Address("Seq", "cold")
    async with Runtime(aggregates=[Seq], store=store) as rt:
        await rt.ask(warm, Append(n=1))
        store.gate = anyio.Event()
        # Queued together: the worker that takes the cold one must hand the
        # ready queue (the warm one, behind it) to another worker first.
        pending = rt.ask_nowait(cold, Append(n=1))
        behind = rt.ask_nowait(warm, Append(n=2))
        with anyio.fail_after(5):
            assert (await behind).version == 2
        assert store.waiting == 1
        with anyio.fail_after(5):
            for n in range(3, 12):
                assert (await rt.ask(warm, Append(n=n))).version == n
        assert not pending.done()
        store.gate.set()
        assert (await pending).version == 1


async def test_shutdown_past_its_deadline_fails_asks_whose_append_is_in_flight() -> None:
    """Past shutdown_timeout, an ask waiting on an unsettled append gets ActorStopped, as do
    the ones queued behind it; the store settling the append later changes nothing."""
    store = HeldStore()
    seq = Address("Seq", "1")
    results: list[Any] = []

    async def asker(n: int) -> None:
        try:
            results.append(await rt.ask(seq, Append(n=n), timeout=None))
        except ActorStopped as exc:
            results.append(exc)

    async with (
        anyio.create_task_group() as tg,
        Runtime(aggregates=[Seq], store=store, shutdown_timeout=0.05) as rt,
    ):
        store.hold = False
        await rt.ask(seq, Dump())
        store.hold = True
        for n in range(3):
            tg.start_soon(asker, n)
        await wait_until(lambda: len(store.held) == 1)
    assert len(results) == 3
    assert all(isinstance(r, ActorStopped) for r in results)
    assert any("may still be committed" in str(r) for r in results)
    assert len(store.held) == 1
    store.release()  # the closed store fails it now: the late callback copes
    await anyio.lowlevel.checkpoint()
    assert store.statistics().events == 0
    stats = rt.statistics()
    assert (stats.commands, stats.rejected) == (2, 1)  # the Dump, then the late failure


class _BadRepr(Exception):
    """A domain error whose repr() and str() themselves raise."""

    def __repr__(self) -> str:
        raise RuntimeError("repr failed")

    def __str__(self) -> str:
        raise RuntimeError("str failed")


class _Go(Command):
    """Fails with _BadRepr."""


class _Fails(Aggregate):
    @handles
    def go(self, cmd: _Go) -> None:
        raise _BadRepr


async def test_a_domain_error_whose_repr_raises_still_reaches_the_caller() -> None:
    """Logging the failure never calls into user code that can raise: the caller gets
    the error, a tell's failure becomes a dead letter, and the runtime goes on."""
    async with Runtime(aggregates=[_Fails, Seq], store=MemoryStore()) as rt:
        with pytest.raises(_BadRepr):
            await rt.ask(Address("_Fails", "1"), _Go())
        rt.tell(Address("_Fails", "2"), _Go())
        await wait_until(lambda: len(rt.dead_letters()) == 1)
        assert (await rt.ask(Address("Seq", "1"), Append(n=1))).version == 1
