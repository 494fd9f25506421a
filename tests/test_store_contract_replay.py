"""Conformance: ``read_stream_payloads``, the lean read a replay uses (every backend)."""

from __future__ import annotations

from typing import Any

import pytest

from stores import EventStore, InvalidStreamName, NewEvent
from tests._store_helpers import ev

pytestmark = pytest.mark.anyio


async def _seed(store: EventStore) -> None:
    await store.append("Account-1", [ev(n=i) for i in range(1, 6)], 0)
    await store.append("Account-2", [ev("Other.Thing", k="x")], 0)
    await store.append(
        "Account-1",
        [NewEvent("Test.Versioned", {"nested": {"a": [1, 2]}}, {"who": "me"}, schema_version=3)],
        5,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"from_version": 3},
        {"to_version": 2},
        {"from_version": 2, "to_version": 4},
        {"from_version": 6, "to_version": 6},
        {"from_version": 7},
        {"from_version": 4, "to_version": 2},
        {"limit": 2},
        {"from_version": 2, "limit": 10},
        {"from_version": 3, "to_version": 5, "limit": 2},
        {"limit": 0},
        {"limit": -1},
    ],
)
async def test_payloads_match_read_stream(store: EventStore, kwargs: dict[str, Any]) -> None:
    """read_stream_payloads gives (version, type, schema_version, data) of read_stream's events."""
    await _seed(store)
    expected = [
        (e.version, e.type, e.schema_version, e.data)
        for e in await store.read_stream("Account-1", **kwargs)
    ]
    assert await store.read_stream_payloads("Account-1", **kwargs) == expected


async def test_payloads_carry_decoded_data_types_and_schema_versions(store: EventStore) -> None:
    """Payloads hold the decoded JSON data, the type name and the schema version as stored."""
    await _seed(store)
    payloads = await store.read_stream_payloads("Account-1", 5)
    assert payloads == [
        (5, "Test.Happened", 1, {"n": 5}),
        (6, "Test.Versioned", 3, {"nested": {"a": [1, 2]}}),
    ]
    assert all(type(p) is tuple and len(p) == 4 for p in payloads)


async def test_payloads_of_a_missing_stream_are_empty(store: EventStore) -> None:
    """A stream that does not exist reads as no payloads."""
    await _seed(store)
    assert await store.read_stream_payloads("Account-3") == []


@pytest.mark.parametrize("name", ["", 42, "a\x00b"])
async def test_payloads_reject_an_invalid_stream_name(store: EventStore, name: Any) -> None:
    """An invalid stream name raises InvalidStreamName, as read_stream does."""
    with pytest.raises(InvalidStreamName):
        await store.read_stream_payloads(name)
