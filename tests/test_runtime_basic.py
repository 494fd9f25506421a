"""The runtime's write path, idempotency, bad input and errors (MemoryStore)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

import runtime._actor
from aggregates import InvalidHandlerResult
from aggregates.examples.bank import Account, Deposit, GetBalance, InsufficientFunds, Open, Withdraw
from runtime import (
    Address,
    ConflictRetriesExhausted,
    InvalidAddress,
    InvalidArgument,
    Runtime,
    RuntimeClosed,
    UnknownCategory,
    UnknownCommand,
)
from stores import (
    ANY,
    AppendResult,
    CommandRecord,
    ConcurrencyError,
    MemoryStore,
    NewEvent,
    SerializationError,
    StoreUnavailable,
)
from tests.runtime_child import (
    Append,
    BadResult,
    Context,
    Dump,
    Explode,
    Seq,
    Unencodable,
    Unregistered,
    wait_until,
)

pytestmark = pytest.mark.anyio

ACC = Address("Account", "42")


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    """A running runtime over a fresh MemoryStore hosting Account and Seq."""
    async with Runtime(aggregates=[Account, Seq], store=MemoryStore()) as runtime:
        yield runtime


def brief(events: Sequence[Any]) -> list[tuple[int, str, int, str, Any, Any]]:
    """The fields of recorded events that do not depend on when they are read."""
    return [(e.position, e.stream, e.version, e.type, e.data, e.metadata) for e in events]


async def test_address_parse_and_stream() -> None:
    """An address parses from 'Category/id', names its stream and compares by value."""
    a = Address.parse("Account/x/y")
    assert (a.category, a.id, a.stream, str(a)) == ("Account", "x/y", "Account-x/y", "Account/x/y")
    assert Address("Account", "42") == Address.parse("Account/42")
    assert hash(Address("Account", "42")) == hash(ACC)
    with pytest.raises(AttributeError):
        a.id = "z"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Address("", "1"),
        lambda: Address("Account", ""),
        lambda: Address(1, "1"),  # type: ignore[arg-type]
        lambda: Address("Account", 7),  # type: ignore[arg-type]
        lambda: Address("Acc-ount", "1"),
        lambda: Address("Account", "x" * 300),
        lambda: Address("Account", "a\nb"),
        lambda: Address.parse("no-slash"),
        lambda: Address.parse(42),  # type: ignore[arg-type]
    ],
)
async def test_invalid_address(build: Any) -> None:
    """A non-string, empty or unprintable category or id raises InvalidAddress."""
    with pytest.raises(InvalidAddress):
        build()


async def test_write_path_records_applies_and_replies(rt: Runtime) -> None:
    """ask appends the handler's events with the command's ids, applies them and replies."""
    out = await rt.ask(ACC, Open(owner="ann"), correlation_id="corr", causation_id="cause")
    assert out.version == 1
    assert out.positions == range(1, 2)
    assert not out.duplicate
    [event] = out.events
    assert (event.type, event.data, event.stream) == (
        "Account.Opened",
        {"owner": "ann"},
        "Account-42",
    )
    assert event.metadata == {"correlation_id": "corr", "causation_id": "cause"}
    out = await rt.ask("Account/42", Deposit(amount=5))
    assert (out.version, out.positions) == (2, range(2, 3))
    assert brief(await rt.store.read_stream("Account-42")) == brief([event, *out.events])
    query = await rt.ask(ACC, GetBalance())
    assert (query.value, query.events, query.version) == (5, (), 2)


async def test_handler_exception_reaches_caller_and_changes_nothing(rt: Runtime) -> None:
    """A handler's exception goes to the caller; nothing is recorded and state is untouched."""
    await rt.ask(ACC, Open(owner="ann"))
    await rt.ask(ACC, Deposit(amount=5))
    with pytest.raises(InsufficientFunds):
        await rt.ask(ACC, Withdraw(amount=6))
    assert await rt.store.head() == 2
    assert (await rt.ask(ACC, GetBalance())).value == 5
    assert (await rt.ask(ACC, Withdraw(amount=5))).version == 3


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (BadResult(), InvalidHandlerResult),
        (Unregistered(), InvalidHandlerResult),
        (Unencodable(), SerializationError),
        (Explode(), RuntimeError),
    ],
)
async def test_bad_handler_output_records_nothing(rt: Runtime, command: Any, error: Any) -> None:
    """Non-events, an unregistered or unencodable event: a typed error, nothing written."""
    seq = Address("Seq", "1")
    await rt.ask(seq, Append(n=1))
    with pytest.raises(error):
        await rt.ask(seq, command)
    assert await rt.store.head() == 1
    out = await rt.ask(seq, Append(n=2))
    assert out.version == 2
    assert (await rt.ask(seq, Dump())).value == {"items": [1, 2], "blobs": 0}


async def test_bad_input_raises_typed_errors_and_changes_nothing(rt: Runtime) -> None:
    """Unknown category/command, bad address or ids: typed errors, no actor, no event."""
    with pytest.raises(UnknownCategory):
        await rt.ask(Address("Nope", "1"), Deposit(amount=1))
    with pytest.raises(UnknownCommand):
        await rt.ask(ACC, Append(n=1))
    with pytest.raises(UnknownCommand):
        await rt.ask(ACC, "deposit")  # type: ignore[arg-type]
    with pytest.raises(InvalidAddress):
        await rt.ask(42, Deposit(amount=1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await rt.ask(ACC, Open(owner="x"), command_id="")
    with pytest.raises(InvalidArgument):
        await rt.ask(ACC, Open(owner="x"), correlation_id=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await rt.ask(ACC, Open(owner="x"), timeout=-1)
    with pytest.raises(UnknownCategory):
        rt.tell(Address("Nope", "1"), Deposit(amount=1))
    with pytest.raises(InvalidArgument):
        await rt.load(ACC, at_version=-1)
    stats = rt.statistics()
    assert (stats.live_actors, stats.commands, await rt.store.head()) == (0, 0, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"mailbox_size": 0},
        {"idle_timeout": -1},
        {"max_actors": 1.5},
        {"max_retries": -1},
        {"shutdown_timeout": float("nan")},
        {"path": "x.db"},
    ],
)
async def test_invalid_runtime_options(options: dict[str, Any]) -> None:
    """Bad options (or both path and store) raise InvalidArgument."""
    with pytest.raises(InvalidArgument):
        Runtime(aggregates=[Account], store=MemoryStore(), **options)


async def test_runtime_closed_outside_async_with() -> None:
    """ask before entering and after leaving the runtime raises RuntimeClosed."""
    runtime = Runtime(aggregates=[Account], store=MemoryStore())
    with pytest.raises(RuntimeClosed):
        await runtime.ask(ACC, Open(owner="x"))
    async with runtime:
        await runtime.ask(ACC, Open(owner="x"))
    with pytest.raises(RuntimeClosed):
        await runtime.ask(ACC, Deposit(amount=1))
    with pytest.raises(RuntimeClosed):
        runtime.tell(ACC, Deposit(amount=1))


async def test_command_id_returns_original_outcome(rt: Runtime) -> None:
    """A repeated command id returns the first outcome (duplicate=True) and records nothing."""
    await rt.ask(ACC, Open(owner="ann"))
    first = await rt.ask(ACC, Deposit(amount=5), command_id="dep-1")
    again = await rt.ask(ACC, Deposit(amount=5), command_id="dep-1")
    assert again.duplicate
    assert not first.duplicate
    assert brief(again.events) == brief(first.events)
    assert (again.version, again.positions) == (first.version, first.positions)
    assert first.events[0].metadata == {"command_id": "dep-1"}
    assert await rt.store.head() == 2
    assert (await rt.ask(ACC, GetBalance())).value == 5
    assert rt.statistics().duplicates == 1


async def test_command_id_reused_at_another_address_names_where_it_ran(rt: Runtime) -> None:
    """Command ids are global: a repeat sent elsewhere records nothing and its outcome
    names the address the command ran at, with that stream's events."""
    other = Address("Account", "7")
    await rt.ask(ACC, Open(owner="ann"))
    await rt.ask(other, Open(owner="bob"))
    first = await rt.ask(ACC, Deposit(amount=5), command_id="dep-x")
    again = await rt.ask(other, Deposit(amount=5), command_id="dep-x")
    assert again.duplicate
    assert again.address == ACC
    assert [e.stream for e in again.events] == ["Account-42"]
    assert (again.version, again.positions) == (first.version, first.positions)
    assert (await rt.ask(other, GetBalance())).value == 0


async def test_repeated_command_id_wins_over_a_rejecting_handler(rt: Runtime) -> None:
    """A repeated id whose handler would now reject or record nothing gets the original outcome."""
    first = await rt.ask(ACC, Open(owner="ann"), command_id="open")
    again = await rt.ask(ACC, Open(owner="ann"), command_id="open")  # would be "already opened"
    assert again.duplicate
    assert brief(again.events) == brief(first.events)
    query = await rt.ask(ACC, GetBalance(), command_id="open")  # a query under a recorded id
    assert query.duplicate
    assert query.version == 1
    fresh_query = await rt.ask(ACC, GetBalance(), command_id="q-1")  # never recorded
    assert not fresh_query.duplicate
    assert fresh_query.value == 0
    assert await rt.store.head() == 1


class CountingStore(MemoryStore):
    """Counts find_command calls."""

    def __init__(self) -> None:
        super().__init__()
        self.finds = 0

    async def find_command(self, command_id: str) -> CommandRecord | None:
        self.finds += 1
        return await super().find_command(command_id)


async def test_command_id_costs_no_extra_read_when_recorded() -> None:
    """A fresh command id is checked in the append itself; a repeat still finds its outcome."""
    store = CountingStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        seq = Address("Seq", "1")
        first = await rt.ask(seq, Append(n=1), command_id="c")
        assert store.finds == 0
        again = await rt.ask(seq, Append(n=1), command_id="c")
        assert again.duplicate
        assert brief(again.events) == brief(first.events)
        assert (await rt.ask(seq, Dump())).value["items"] == [1]


async def test_conflict_reloads_and_retries(rt: Runtime) -> None:
    """After another writer appends, the actor catches up and re-runs the command."""
    seq = Address("Seq", "1")
    await rt.ask(seq, Append(n=1))
    # Another process appends behind the live actor's back.
    await rt.store.append("Seq-1", [NewEvent("Seq.Appended", {"n": 99})], ANY)
    out = await rt.ask(seq, Append(n=2))
    assert out.version == 3
    assert (await rt.ask(seq, Dump())).value["items"] == [1, 99, 2]
    stats = rt.statistics()
    assert (stats.conflicts, stats.retries) == (1, 1)


async def test_rejection_on_stale_state_reloads_and_retries(rt: Runtime) -> None:
    """A handler rejecting on state another process has since changed is re-run on fresh state."""
    assert (await rt.ask(ACC, GetBalance())).version == 0  # live, knows no events
    # Another process opens the account behind the live actor's back.
    await rt.store.append("Account-42", [NewEvent("Account.Opened", {"owner": "ann"})], 0)
    out = await rt.ask(ACC, Deposit(amount=5))  # "not open" on the stale state
    assert out.version == 2
    assert (await rt.ask(ACC, GetBalance())).value == 5
    with pytest.raises(InsufficientFunds):  # a rejection on the latest state stands
        await rt.ask(ACC, Withdraw(amount=6))


async def test_duplicate_from_another_writer_folds_its_events_in(rt: Runtime) -> None:
    """A command id recorded by another process returns its outcome and updates the actor."""
    assert (await rt.ask(ACC, GetBalance())).version == 0
    opened = NewEvent("Account.Opened", {"owner": "ann"})
    await rt.store.append("Account-42", [opened], 0, command_id="open-42")
    out = await rt.ask(ACC, Open(owner="ann"), command_id="open-42")
    assert out.duplicate
    assert out.version == 1
    assert (await rt.ask(ACC, GetBalance())).version == 1  # a query: no freshness check


class FailsOneRead(MemoryStore):
    """``read_stream_payloads`` fails once, when armed, after ``fail_after`` good pages."""

    fail_after: int | None = None

    async def read_stream_payloads(
        self, stream: str, from_version: int = 1, to_version: int | None = None, **kw: Any
    ) -> list[tuple[int, str, int, Any]]:
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.fail_after = None
                raise StoreUnavailable("a transient read failure")
            self.fail_after -= 1
        return await super().read_stream_payloads(stream, from_version, to_version, **kw)


async def test_catch_up_failing_midway_does_not_fold_events_in_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A catch-up whose second page fails leaves no half-folded state behind: the next
    command reloads from the store instead of applying the first page again."""
    monkeypatch.setattr(runtime._actor, "READ_PAGE", 10)
    store = FailsOneRead()
    seq = Address("Seq", "1")
    async with Runtime(aggregates=[Seq], store=store) as rt:
        await rt.ask(seq, Append(n=0))
        for n in range(1, 26):  # another process appends 25 events: three pages
            await store.append("Seq-1", [NewEvent("Seq.Appended", {"n": n})], ANY)
        store.fail_after = 1  # the catch-up's first page reads, its second fails
        with pytest.raises(StoreUnavailable):
            await rt.ask(seq, Append(n=26))
        assert (await rt.ask(seq, Append(n=26))).version == 27
        items = (await rt.ask(seq, Dump())).value["items"]
        assert items == list(range(27))
        assert items == (await rt.load(seq)).items


class AlwaysConflicts(MemoryStore):
    """Every append loses to an imaginary other writer."""

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: Any,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        raise ConcurrencyError(stream, expected_version, expected_version + 1)


async def test_conflict_retries_exhausted() -> None:
    """A command that keeps conflicting fails with ConflictRetriesExhausted after max_retries."""
    async with Runtime(aggregates=[Seq], store=AlwaysConflicts(), max_retries=2) as rt:
        with pytest.raises(ConflictRetriesExhausted) as info:
            await rt.ask(Address("Seq", "1"), Append(n=1))
        assert info.value.attempts == 3
        assert isinstance(info.value.conflict, ConcurrencyError)
        assert info.value.__cause__ is info.value.conflict
        assert await rt.store.head() == 0


async def test_tell_failures_go_to_dead_letters(rt: Runtime) -> None:
    """A told command that fails is recorded as a dead letter, not raised."""
    rt.tell(ACC, Deposit(amount=5), command_id="t-1")  # the account is not open
    rt.tell(ACC, Open(owner="ann"))
    await wait_until(lambda: rt.statistics().commands == 2)
    [dead] = rt.dead_letters()
    assert (dead.address, dead.command, dead.command_id) == (ACC, Deposit(amount=5), "t-1")
    assert rt.statistics().dead_letters == 1


async def test_idle_actors_own_no_task_and_no_task_outlives_the_runtime() -> None:
    """Hundreds of live actors share a handful of tasks; none is left after the block."""
    import asyncio

    before = len(asyncio.all_tasks())
    async with Runtime(aggregates=[Seq], store=MemoryStore()) as rt:
        for i in range(300):
            await rt.ask(Address("Seq", str(i)), Append(n=i))
        stats = rt.statistics()
        assert stats.live_actors == 300
        assert len(asyncio.all_tasks()) - before < 10
    assert len(asyncio.all_tasks()) == before


async def test_statistics_snapshot(rt: Runtime) -> None:
    """statistics() is an immutable snapshot of runtime and store counters."""
    await rt.ask(ACC, Open(owner="ann"))
    with pytest.raises(InsufficientFunds):
        await rt.ask(ACC, Withdraw(amount=1))
    stats = rt.statistics()
    assert (stats.live_actors, stats.commands, stats.rejected, stats.activations) == (1, 2, 1, 1)
    assert stats.activation_max_s >= stats.activation_mean_s > 0
    assert (stats.store.appends, stats.store.events) == (1, 1)
    with pytest.raises(AttributeError):
        stats.commands = 5  # type: ignore[misc]


async def test_turn_binds_address_and_command_id_for_logs(rt: Runtime) -> None:
    """Inside a turn, structlog's context carries the address and (when given) the command id."""
    seq = Address("Seq", "ctx")
    with_id = await rt.ask(seq, Context(), command_id="cmd-1")
    assert with_id.value == {"address": "Seq/ctx", "command_id": "cmd-1"}
    without = await rt.ask(seq, Context())
    assert without.value == {"address": "Seq/ctx"}
