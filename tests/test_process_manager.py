"""Process managers: the money-transfer saga, compensation, idempotency under replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aggregates import Aggregate, Command, EventRegistry
from aggregates.examples.bank import Account, AccountClosed, AccountOpened, Deposited, Withdrawn
from aggregates.examples.transfer import (
    CreditRejected,
    StartTransfer,
    Transfer,
    TransferStarted,
    next_step,
)
from runtime import Address, Runtime, RuntimeClosed
from runtime._process_manager import ProcessContext, ProcessManager
from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import ProjectionConfigError, ProjectionFailed
from runtime._projection_types import FailurePolicy
from runtime.examples.transfers import transfer_process_manager
from stores import EventStore, MemoryStore, NewEvent, RecordedEvent


class FakeRuntime:
    """A stand-in for Runtime.ask: replays a stream, handles, appends with the command id."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.kinds: dict[str, type[Aggregate]] = {"Account": Account, "Transfer": Transfer}
        self.registry = EventRegistry()
        for kind in self.kinds.values():
            self.registry.register_aggregate(kind)
        self.executed: list[str] = []  # command ids that ran and recorded events
        self.repeats: list[str] = []  # command ids answered from the store

    async def ask(
        self,
        address: Any,
        command: Any,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Any:
        """Run the command against the aggregate's replayed state (no actor)."""
        if command_id is not None and await self.store.find_command(command_id) is not None:
            self.repeats.append(command_id)
            return "duplicate"
        state = self.kinds[address.category]()
        recorded = await self.store.read_stream(address.stream)
        state.apply_all(self.registry.decode(e.type, e.schema_version, e.data) for e in recorded)
        events, _ = state.handle(command)
        meta = {"correlation_id": correlation_id, "causation_id": causation_id}
        await self.store.append(
            address.stream,
            [NewEvent(type(e).__event_type__, e, meta) for e in events],
            len(recorded),
            command_id=command_id,
        )
        if command_id is not None:
            self.executed.append(command_id)
        return "ok"


async def run(fake: FakeRuntime, address: Address, command: Command) -> None:
    """Send a command with no id (setting up accounts and starting transfers)."""
    await fake.ask(address, command)


def balance_of(store: MemoryStore, account: str) -> int:
    """An account's balance from its stream (the write side, no read model)."""
    total = 0
    for event in store._streams.get(f"Account-{account}", []):
        if event.type == "Account.Deposited":
            total += event.data["amount"]
        elif event.type == "Account.Withdrawn":
            total -= event.data["amount"]
    return total


def status_of(store: MemoryStore, transfer: str) -> str:
    """The type of a transfer's latest event."""
    return store._streams[f"Transfer-{transfer}"][-1].type


async def setup_accounts(fake: FakeRuntime) -> None:
    """Accounts a (100 cents), b (open, empty) and c (closed)."""
    from aggregates.examples.bank import Close, Deposit, Open

    for name in ("a", "b", "c"):
        await run(fake, Address("Account", name), Open(owner=name))
    await run(fake, Address("Account", "a"), Deposit(100))
    await run(fake, Address("Account", "c"), Close())


def test_next_step_is_a_pure_decision() -> None:
    """The transfer's decision maps each event to the command it calls for."""
    step = next_step(TransferStarted("a", "b", 5))
    assert step is not None
    assert (step.name, step.account) == ("debit", "a")
    refund = next_step(CreditRejected("a", 5, "closed"))
    assert refund is not None
    assert refund.on_rejected is None
    assert refund.account == "a"
    assert next_step(AccountOpened("x")) is None


@pytest.mark.anyio
async def test_transfer_completes_and_compensates() -> None:
    """A transfer moves the money; one to a closed account refunds the source."""
    async with MemoryStore() as store:
        fake = FakeRuntime(store)
        await setup_accounts(fake)
        pm = transfer_process_manager()
        async with ProjectionEngine(store, [pm], runtime=fake):
            await run(fake, Address("Transfer", "t1"), StartTransfer("a", "b", 30))
            await run(fake, Address("Transfer", "t2"), StartTransfer("a", "c", 20))
            await run(fake, Address("Transfer", "t3"), StartTransfer("b", "a", 999))
            for _ in range(4):  # each step's event triggers the next one
                await pm.wait_for(await store.head(), timeout=10)
        assert status_of(store, "t1") == "Transfer.Completed"
        assert status_of(store, "t2") == "Transfer.Refunded"
        assert status_of(store, "t3") == "Transfer.DebitRejected"
        assert (balance_of(store, "a"), balance_of(store, "b"), balance_of(store, "c")) == (
            70,
            30,
            0,
        )
        started = store._streams["Transfer-t1"][0]
        debit = store._streams["Account-a"][-1]  # the refund of t2 came last
        assert debit.metadata["correlation_id"] == store._streams["Transfer-t2"][0].event_id
        assert started.event_id + ":debit" in fake.executed


@pytest.mark.anyio
async def test_replay_repeats_no_effect() -> None:
    """After a reset to 0 the process manager resends only known command ids: nothing changes."""
    async with MemoryStore() as store:
        fake = FakeRuntime(store)
        await setup_accounts(fake)
        pm = transfer_process_manager()
        async with ProjectionEngine(store, [pm], runtime=fake):
            await run(fake, Address("Transfer", "t1"), StartTransfer("a", "b", 30))
            await run(fake, Address("Transfer", "t2"), StartTransfer("a", "c", 20))
            for _ in range(4):
                await pm.wait_for(await store.head(), timeout=10)
            head, executed = await store.head(), list(fake.executed)
            await pm.reset(0)
            await pm.wait_for(head, timeout=10)
            assert await store.head() == head  # no new event anywhere
            assert fake.executed == executed
            assert set(fake.repeats) >= {cid for cid in executed if cid.endswith(":debit")}
        assert (balance_of(store, "a"), balance_of(store, "b")) == (70, 30)


@pytest.mark.anyio
async def test_context_derives_ids_from_the_event() -> None:
    """Command ids are event_id:step; correlation comes from the event's metadata."""
    sent: list[dict[str, Any]] = []

    class Recorder:
        async def ask(self, address: Any, command: Any, **ids: Any) -> None:
            sent.append(ids)

    async def handler(event: RecordedEvent, context: ProcessContext) -> None:
        await context.ask("Account/x", object(), step="one")

    pm = ProcessManager("ids", handler, sender=Recorder())
    async with MemoryStore() as store, ProjectionEngine(store, [pm]):
        result = await store.append("S-1", [NewEvent("T.A", {}, {"correlation_id": "c-1"})], 0)
        await pm.wait_for(result.positions[-1], timeout=10)
        event = (await store.read_all())[0]
    assert sent == [
        {
            "command_id": f"{event.event_id}:one",
            "correlation_id": "c-1",
            "causation_id": event.event_id,
        }
    ]


@pytest.mark.anyio
async def test_process_manager_without_a_sender_is_refused() -> None:
    """A process manager in an engine without a runtime fails to start with a config error."""
    async with MemoryStore() as store:
        with pytest.raises(ProjectionConfigError):
            async with ProjectionEngine(store, [transfer_process_manager()]):
                pass


@pytest.mark.anyio
async def test_with_the_real_runtime_across_a_restart() -> None:
    """With Runtime.ask, a transfer compensates, and a restarted process manager repeats nothing."""
    store = MemoryStore()
    runtime = Runtime([Account, Transfer], store=store, shutdown_timeout=2)
    async with runtime as rt:
        from aggregates.examples.bank import Close, Deposit, Open

        for name in ("a", "b"):
            await rt.ask(Address("Account", name), Open(owner=name))
        await rt.ask(Address("Account", "a"), Deposit(50))
        await rt.ask(Address("Account", "b"), Close())
        async with ProjectionEngine(store, [transfer_process_manager()], runtime=rt) as engine:
            await rt.ask(Address("Transfer", "t"), StartTransfer("a", "b", 20))
            for _ in range(4):
                await engine.wait_for(await store.head(), timeout=10)
        head = await store.head()
        await store.reset_checkpoint("transfers", 0)  # as if the checkpoint was lost
        async with ProjectionEngine(store, [transfer_process_manager()], runtime=rt) as engine:
            await engine.wait_for(head, timeout=10)
            assert await store.head() == head
        types = [e.type for e in await store.read_stream("Transfer-t")]
        assert types == [
            "Transfer.Started",
            "Transfer.Debited",
            "Transfer.CreditRejected",
            "Transfer.Refunded",
        ]
        amounts = [
            (e.type, e.data.get("amount"))
            for e in await store.read_stream("Account-a")
            if e.type in (Deposited.__event_type__, Withdrawn.__event_type__)
        ]
        assert amounts == [
            ("Account.Deposited", 50),
            ("Account.Withdrawn", 20),
            ("Account.Deposited", 20),
        ]
        assert AccountClosed.__event_type__ in [
            e.type for e in await store.read_stream("Account-b")
        ]


@pytest.mark.anyio
async def test_a_closing_runtime_stops_the_process_manager_but_parks_nothing(
    tmp_path: Path,
) -> None:
    """RuntimeClosed is retried and then stops the process manager; the event is not parked."""

    class Closed:
        async def ask(self, address: Any, command: Any, **ids: Any) -> None:
            raise RuntimeClosed("closing")

    async def handler(event: RecordedEvent, context: ProcessContext) -> None:
        await context.ask("Account/x", object(), step="one")

    pm = ProcessManager(
        "closing",
        handler,
        sender=Closed(),
        policy=FailurePolicy.PARK,
        dead_letters=tmp_path / "dead.sqlite",
        max_attempts=2,
        retry_backoff=0,
    )
    async with MemoryStore() as store, ProjectionEngine(store, [pm]):
        await store.append("S-1", [NewEvent("T.A", {})], 0)
        with pytest.raises(ProjectionFailed) as caught:
            await pm.wait_for(1, timeout=10)
        assert isinstance(caught.value.error, RuntimeClosed)
        assert await pm.parked() == []
        assert await store.get_checkpoint("closing") == 0
