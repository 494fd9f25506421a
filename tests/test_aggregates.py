"""The modelling kit: messages, handler/applier registration, handler results."""

from __future__ import annotations

import contextlib
import dataclasses

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregates import (
    Aggregate,
    Command,
    DomainError,
    Event,
    EventRegistry,
    InvalidHandlerResult,
    RegistrationError,
    Reply,
    applies,
    handles,
)
from aggregates.examples.bank import (
    Account,
    AccountError,
    Close,
    Deposit,
    Deposited,
    GetBalance,
    InsufficientFunds,
    Open,
    Withdraw,
)
from aggregates.examples.orders import AddLine, Cancel, Confirm, Order, OrderError, PlaceOrder, Ship


def run(agg: Aggregate, *commands: Command) -> list[Event]:
    """Handle and apply commands in turn; return every event recorded."""
    recorded: list[Event] = []
    for command in commands:
        events, _ = agg.handle(command)
        agg.apply_all(events)
        recorded.extend(events)
    return recorded


def test_messages_are_frozen_dataclasses() -> None:
    """Event and Command subclasses are immutable dataclasses."""
    event = Deposited(amount=5)
    assert dataclasses.is_dataclass(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.amount = 6  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Deposit(amount=1).amount = 2  # type: ignore[misc]


def test_event_type_name_explicit_and_default() -> None:
    """An explicit name is the stored type name; the default is the qualified class name."""

    class Renamed(Event, name="Stable.Name"):
        x: int

    class Plain(Event):
        x: int

    assert Renamed.__event_type__ == "Stable.Name"
    assert Plain.__event_type__.endswith("Plain")
    assert Renamed.__schema_version__ == 1


def test_events_encode_natively_with_orjson() -> None:
    """Events serialise as their fields (orjson's native dataclass support)."""
    assert orjson.loads(orjson.dumps(Deposited(amount=7))) == {"amount": 7}


def test_bank_account_lifecycle() -> None:
    """Open, deposit, withdraw and close update the state through appliers."""
    acc = Account()
    run(acc, Open(owner="ada"), Deposit(amount=100), Withdraw(amount=40))
    assert acc.balance == 60
    assert acc.handle(GetBalance()) == ([], 60)
    run(acc, Withdraw(amount=60), Close())
    assert acc.closed
    assert not acc.is_open


def test_rejection_leaves_state_untouched() -> None:
    """A rejected command raises the domain error and changes nothing."""
    acc = Account()
    run(acc, Open(owner="ada"), Deposit(amount=10))
    before = dict(vars(acc))
    with pytest.raises(InsufficientFunds):
        acc.handle(Withdraw(amount=11))
    with pytest.raises(AccountError):
        acc.handle(Deposit(amount=-1))
    assert vars(acc) == before
    assert issubclass(InsufficientFunds, DomainError)


def test_order_lifecycle_and_rules() -> None:
    """Orders move placed -> confirmed -> shipped and refuse invalid steps."""
    order = Order()
    with pytest.raises(OrderError):
        order.handle(Confirm())
    run(order, PlaceOrder(customer="c1"))
    with pytest.raises(OrderError):
        order.handle(Confirm())  # empty order
    run(order, AddLine(sku="a", quantity=2, unit_price=150), Confirm())
    assert order.total == 300
    run(order, Ship())
    assert order.status == "shipped"
    with pytest.raises(OrderError):
        order.handle(Cancel(reason="late"))


def test_handler_results_are_normalised() -> None:
    """A handler may return an event, a list, a tuple, None or a Reply."""

    class Happened(Event):
        n: int

    class DoOne(Command):
        pass

    class DoMany(Command):
        pass

    class DoNothing(Command):
        pass

    class Ask(Command):
        pass

    class Bad(Command):
        pass

    class Thing(Aggregate):
        def __init__(self) -> None:
            self.total = 0

        @handles
        def one(self, cmd: DoOne) -> Event:
            return Happened(n=1)

        @handles
        def many(self, cmd: DoMany) -> tuple[Event, ...]:
            return (Happened(n=1), Happened(n=2))

        @handles
        def nothing(self, cmd: DoNothing) -> None:
            return None

        @handles
        def ask(self, cmd: Ask) -> Reply:
            return Reply("answer", (Happened(n=5),))

        @handles
        def bad(self, cmd: Bad) -> object:
            return {"not": "events"}

        @applies
        def _happened(self, e: Happened) -> None:
            self.total += e.n

    thing = Thing()
    assert thing.handle(DoOne()) == ([Happened(n=1)], None)
    assert thing.handle(DoMany()) == ([Happened(n=1), Happened(n=2)], None)
    assert thing.handle(DoNothing()) == ([], None)
    assert thing.handle(Ask()) == ([Happened(n=5)], "answer")
    with pytest.raises(InvalidHandlerResult, match="Bad"):
        thing.handle(Bad())
    assert Thing.category == "Thing"
    assert set(Thing.command_types()) == {DoOne, DoMany, DoNothing, Ask, Bad}


def test_registration_errors_are_clear() -> None:
    """A handler without a Command annotation or a bad category fails at class creation."""

    with pytest.raises(RegistrationError, match="annotate"):

        class NoAnnotation(Aggregate):
            @handles
            def h(self, cmd):  # type: ignore[no-untyped-def]
                return None

    for bad in ("Has-Dash", "Has/Slash", "Tab\there", ""):
        with pytest.raises(RegistrationError, match="category"):

            class BadCategory(Aggregate, category=bad):
                pass

    with pytest.raises(RegistrationError, match="version"):

        class BadVersion(Event, version=0):
            pass


def test_snapshot_round_trip() -> None:
    """The default snapshot restores an equal state through JSON."""
    acc = Account()
    run(acc, Open(owner="ada"), Deposit(amount=3))
    restored = Account.from_snapshot(orjson.loads(orjson.dumps(acc.snapshot())))
    assert vars(restored) == vars(acc)


def test_snapshot_missing_an_attribute_is_refused() -> None:
    """A snapshot lacking an attribute a new instance has (taken before ``__init__``
    gained it, its schema version not bumped) or not a dict is refused, so the runtime
    replays in full instead of handing handlers a state without it."""
    acc = Account()
    run(acc, Open(owner="ada"))
    state = acc.snapshot()
    del state["balance"]
    with pytest.raises(ValueError, match="balance"):
        Account.from_snapshot(state)
    with pytest.raises(ValueError, match="dict"):
        Account.from_snapshot(["not", "a", "dict"])


commands = st.lists(
    st.one_of(
        st.builds(Deposit, amount=st.integers(-5, 50)),
        st.builds(Withdraw, amount=st.integers(-5, 60)),
        st.just(Close()),
        st.just(GetBalance()),
    ),
    max_size=40,
)


@given(commands)
def test_replay_equals_live_handling(cmds: list[Command]) -> None:
    """Folding the JSON round-tripped recorded events gives the live state."""
    registry = EventRegistry()
    registry.register_aggregate(Account)
    live = Account()
    recorded = run(live, Open(owner="o"))
    for cmd in cmds:
        with contextlib.suppress(AccountError):
            recorded.extend(run(live, cmd))
    replayed = Account()
    for event in recorded:
        data = orjson.loads(orjson.dumps(event))
        replayed.apply(registry.decode(type(event).__event_type__, 1, data))
    assert vars(replayed) == vars(live)
