"""The event registry: stable names, duplicate detection, upcaster chains, decoding."""

from __future__ import annotations

import pytest

from aggregates import (
    DuplicateEventType,
    Event,
    EventRegistry,
    ModelError,
    RegistrationError,
    UnknownEventType,
    UnknownSchemaVersion,
    UpcasterGap,
    upcaster,
)
from aggregates.examples.bank import Account, Deposited


def test_registers_aggregate_events_by_name() -> None:
    """Registering an aggregate registers every event class it applies."""
    registry = EventRegistry()
    registry.register_aggregate(Account)
    assert registry.names()["Account.Deposited"] is Deposited
    assert "Account.Opened" in registry


def test_duplicate_name_fails_at_startup() -> None:
    """Two classes claiming one type name raise DuplicateEventType naming both."""

    class Clash(Event, name="Account.Deposited"):
        amount: int

    registry = EventRegistry([Deposited])
    registry.register(Deposited)  # the same class again is fine
    with pytest.raises(DuplicateEventType, match="Clash"):
        registry.register(Clash)
    assert registry.names()["Account.Deposited"] is Deposited


def test_upcaster_chain_with_hole_fails_at_startup() -> None:
    """A version-3 event with only a 1->2 upcaster raises UpcasterGap."""

    class Gappy(Event, name="Gappy", version=3):
        a: int

    @upcaster(Gappy, from_version=1)
    def _one(data: dict[str, object]) -> dict[str, object]:
        return data

    with pytest.raises(UpcasterGap, match=r"\[2\]"):
        EventRegistry([Gappy])


def test_upcasters_chain_on_read() -> None:
    """A version-1 payload passes the 1->2 and 2->3 upcasters in order."""

    class Priced(Event, name="Priced", version=3):
        cents: int
        currency: str

    @upcaster(Priced, from_version=1)
    def _to_cents(data: dict[str, object]) -> dict[str, object]:
        return {"cents": int(data["euros"]) * 100}  # type: ignore[call-overload]

    @upcaster(Priced, from_version=2)
    def _add_currency(data: dict[str, object]) -> dict[str, object]:
        return {**data, "currency": "EUR"}

    registry = EventRegistry([Priced])
    assert registry.decode("Priced", 1, {"euros": 2}) == Priced(cents=200, currency="EUR")
    assert registry.decode("Priced", 2, {"cents": 5}) == Priced(cents=5, currency="EUR")
    assert registry.decode("Priced", 3, {"cents": 7, "currency": "USD"}) == Priced(
        cents=7, currency="USD"
    )


def test_upcaster_declaration_errors() -> None:
    """An upcaster from an out-of-range version, or a second one, is rejected."""

    class V2(Event, name="V2", version=2):
        a: int

    with pytest.raises(RegistrationError):
        upcaster(V2, from_version=2)
    upcaster(V2, from_version=1)(lambda d: d)
    with pytest.raises(RegistrationError, match="two upcasters"):
        upcaster(V2, from_version=1)(lambda d: d)


def test_decode_errors_are_typed() -> None:
    """Unknown names, newer schema versions and misfit payloads raise typed errors."""
    registry = EventRegistry([Deposited])
    with pytest.raises(UnknownEventType) as info:
        registry.decode("Nope", 1, {})
    assert info.value.type_name == "Nope"
    with pytest.raises(UnknownSchemaVersion) as newer:
        registry.decode("Account.Deposited", 2, {"amount": 1})
    assert (newer.value.schema_version, newer.value.current) == (2, 1)
    with pytest.raises(ModelError, match="does not fit"):
        registry.decode("Account.Deposited", 1, {"amount": 1, "extra": 2})


def test_decode_with_defaults_uses_constructor() -> None:
    """A payload missing a defaulted field still decodes (slow path)."""

    class WithDefault(Event, name="WithDefault"):
        a: int
        b: str = "x"

    registry = EventRegistry([WithDefault])
    assert registry.decode("WithDefault", 1, {"a": 1}) == WithDefault(a=1, b="x")
    fast = registry.decode("WithDefault", 1, {"a": 1, "b": "y"})
    assert fast == WithDefault(a=1, b="y")
    assert fast.b == "y"
