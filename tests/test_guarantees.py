"""DESIGN.md's guarantees pinned end to end, deterministically (a gated store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from aggregates.examples.bank import Account, Deposit, Open
from runtime import Address, Runtime, StoreProjector
from stores import AppendResult, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent

pytestmark = pytest.mark.anyio


class GatedStore(MemoryStore):
    """A MemoryStore whose appends wait at a gate before they commit."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.waiting = 0
        self.second_waiting = anyio.Event()

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        self.waiting += 1
        if self.waiting == 2:
            self.second_waiting.set()
        await self.gate.wait()
        return await super().append(
            stream, events, expected_version, command_id=command_id, reply=reply
        )


async def test_durable_before_visible() -> None:
    """Neither the caller nor a projector sees a command's events before they commit."""
    store = GatedStore()
    seen: list[RecordedEvent] = []

    async def project(event: RecordedEvent) -> None:
        seen.append(event)

    projector = StoreProjector("watch", project, categories=["Account"])
    store.gate.set()  # let the account be opened
    async with Runtime(aggregates=[Account], store=store, projectors=[projector]) as rt:
        acc = Address("Account", "1")
        opened = await rt.ask(acc, Open(owner="ada"))
        await projector.wait_for(opened.positions[-1], timeout=5)
        store.gate = anyio.Event()  # close the gate for the deposit
        replies: list[object] = []

        async def deposit() -> None:
            replies.append(await rt.ask(acc, Deposit(amount=5)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(deposit)
            with anyio.fail_after(5):
                await store.second_waiting.wait()
            await anyio.sleep(0.05)  # give any early reply or delivery its chance
            assert replies == []
            assert await store.head() == 1
            assert [e.type for e in seen] == ["Account.Opened"]
            store.gate.set()
        assert len(replies) == 1
        await projector.wait_for(2, timeout=5)
        assert [e.type for e in seen] == ["Account.Opened", "Account.Deposited"]
