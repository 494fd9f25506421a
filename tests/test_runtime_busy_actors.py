"""Busy actors and passivation: an actor with a command in flight is never dropped.

Dropping it (by the idle sweep, the live-actor cap or ``passivate``) would let
the next message activate a second instance of the same address while the
first still has an append in flight: two writers for one stream.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import runtime._directory
from aggregates.examples.bank import Account, Deposit, Open
from runtime import Address, Runtime
from stores import MemoryStore
from tests.runtime_child import Append, Dump, Seq, wait_until

pytestmark = pytest.mark.anyio


class GatedStore(MemoryStore):
    """Appends wait for ``gate`` (to keep actors busy); counts those to ``Account-1`` in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.gate.set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def append(self, stream: str, *args: Any, **kwargs: Any) -> Any:
        counted = stream == "Account-1"
        if counted:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await super().append(stream, *args, **kwargs)
        finally:
            if counted:
                self.in_flight -= 1


@pytest.mark.parametrize("how", ["sweep", "cap", "passivate"])
async def test_busy_actor_is_never_passivated(how: str) -> None:
    """While Account/1's deposit is in flight, no sweep, cap or passivate() drops it: the
    next deposit queues behind the first on the same instance (one writer per address)."""
    store = GatedStore()
    options: dict[str, Any] = {"idle_timeout": 0.02} if how == "sweep" else {}
    if how == "cap":
        options["max_actors"] = 1
    async with Runtime(aggregates=[Account], store=store, **options) as rt:
        acc = Address("Account", "1")
        await rt.ask(acc, Open(owner="ada"))
        store.gate = anyio.Event()
        first = rt.ask_nowait(acc, Deposit(amount=1))
        await wait_until(lambda: store.in_flight > 0)
        other = None
        if how == "sweep":
            await anyio.sleep(0.2)  # many sweeps while the actor is busy
        elif how == "cap":
            other = rt.ask_nowait(Address("Account", "2"), Open(owner="bob"))
        else:
            assert not rt.passivate(acc)
        second = rt.ask_nowait(acc, Deposit(amount=2))
        await anyio.sleep(0.05)
        assert store.max_in_flight == 1
        store.gate.set()
        assert (await first).version == 2
        assert (await second).version == 3
        if other is not None:
            await other
        assert rt.statistics().conflicts == 0


async def test_live_actor_cap_holds_past_a_crowd_of_busy_actors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Busy actors at the least-recently-used end, more than one eviction scan looks
    at, do not stop the cap: idle actors behind them are still passivated."""
    monkeypatch.setattr(runtime._directory, "_EVICT_SCAN", 4)
    store = GatedStore()
    store.gate = anyio.Event()
    async with Runtime(aggregates=[Seq], store=store, max_actors=10) as rt:
        busy = [rt.ask_nowait(Address("Seq", f"busy-{i}"), Append(n=i)) for i in range(6)]
        for i in range(50):  # queries: these actors are idle again at once
            await rt.ask(Address("Seq", f"idle-{i}"), Dump())
        assert rt.statistics().live_actors <= 10
        store.gate.set()
        assert [(await f).version for f in busy] == [1] * 6
