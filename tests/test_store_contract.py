"""The EventStore conformance suite: every backend runs it through the ``store`` fixture."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stores import (
    ANY,
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    InvalidStreamName,
    NewEvent,
    PayloadTooLarge,
    RecordedEvent,
    SerializationError,
)
from tests._store_helpers import assert_unchanged, backend_of, ev, extra_store

pytestmark = pytest.mark.anyio


# -- append and optimistic concurrency -------------------------------------


async def test_first_append_returns_version_and_positions(store: EventStore) -> None:
    """Appending to a new stream with expected 0 gives versions 1..n and positions 1..n."""
    result = await store.append("Account-1", [ev(n=1), ev(n=2)], 0)
    assert result.stream == "Account-1"
    assert result.version == 2
    assert list(result.positions) == [1, 2]
    assert await store.stream_version("Account-1") == 2
    assert await store.head() == 2


async def test_versions_are_contiguous_across_appends(store: EventStore) -> None:
    """Each append continues the stream's versions and the log's positions."""
    await store.append("Account-1", [ev(n=1)], 0)
    result = await store.append("Account-1", [ev(n=2), ev(n=3)], 1)
    assert result.version == 3
    assert list(result.positions) == [2, 3]
    events = await store.read_stream("Account-1")
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.data["n"] for e in events] == [1, 2, 3]


async def test_any_skips_the_version_check(store: EventStore) -> None:
    """ANY appends to a missing and to an existing stream without a check."""
    assert (await store.append("Account-1", [ev()], ANY)).version == 1
    assert (await store.append("Account-1", [ev(), ev()], ANY)).version == 3


@pytest.mark.parametrize("expected", [0, 1, 3, 9])
async def test_version_mismatch_raises_and_writes_nothing(store: EventStore, expected: int) -> None:
    """A stale or ahead expected version raises ConcurrencyError(stream, expected, actual)."""
    await store.append("Account-1", [ev(), ev()], 0)
    with pytest.raises(ConcurrencyError) as info:
        await store.append("Account-1", [ev(), ev()], expected)
    assert (info.value.stream, info.value.expected, info.value.actual) == ("Account-1", expected, 2)
    await assert_unchanged(store, "Account-1", 2, 2)


async def test_expected_version_on_missing_stream_conflicts(store: EventStore) -> None:
    """Expecting version 1 of a stream that does not exist is a conflict with actual 0."""
    with pytest.raises(ConcurrencyError) as info:
        await store.append("Account-9", [ev()], 1)
    assert (info.value.expected, info.value.actual) == (1, 0)
    await assert_unchanged(store, "Account-9", 0, 0)


@pytest.mark.parametrize(
    ("expected", "command_id"),
    [(-1, None), (True, None), (1.0, None), ("1", None), ("ANY", None), (1, 42)],
    ids=["negative", "bool", "float", "str", "any-as-str", "int-command-id"],
)
async def test_bad_append_arguments_raise_type_error(
    store: EventStore, expected: Any, command_id: Any
) -> None:
    """A bad expected_version or command_id raises TypeError and writes nothing."""
    await store.append("Account-1", [ev()], 0)
    for events in ([ev()], []):
        with pytest.raises(TypeError):
            await store.append("Account-1", events, expected, command_id=command_id)
    await assert_unchanged(store, "Account-1", 1, 1)
    assert store.statistics().conflicts == 0  # bad input, not a version conflict


@pytest.mark.parametrize("bad", [object(), {1, 2}], ids=["object", "set"])
async def test_unserialisable_event_fails_the_whole_batch(store: EventStore, bad: object) -> None:
    """An unencodable event mid-batch raises SerializationError naming its field; no write."""
    await store.append("Account-1", [ev()], 0)
    batch = [ev(n=1), NewEvent("Test.Bad", {"ok": 1, "payload": bad}), ev(n=3)]
    with pytest.raises(SerializationError, match=r"\['payload'\]"):
        await store.append("Account-1", batch, 1)
    await assert_unchanged(store, "Account-1", 1, 1)


async def test_unserialisable_metadata_is_named(store: EventStore) -> None:
    """An unencodable metadata value raises SerializationError naming the key."""
    bad = NewEvent("Test.Bad", {}, metadata={"trace": object()})
    with pytest.raises(SerializationError, match=r"metadata\['trace'\]"):
        await store.append("Account-1", [bad], 0)
    await assert_unchanged(store, "Account-1", 0, 0)


async def test_non_event_item_raises_serialization_error(store: EventStore) -> None:
    """An item that is not a NewEvent raises SerializationError; nothing written."""
    with pytest.raises(SerializationError):
        await store.append("Account-1", [ev(), {"type": "x"}], 0)  # type: ignore[list-item]
    await assert_unchanged(store, "Account-1", 0, 0)


async def test_oversized_event_fails_the_whole_batch(
    store: EventStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An event over max_event_bytes raises PayloadTooLarge with its size; nothing written."""
    async with extra_store(backend_of(request), tmp_path / "small", max_event_bytes=200) as small:
        await small.append("Account-1", [ev(blob="x" * 150)], 0)
        with pytest.raises(PayloadTooLarge) as info:
            await small.append("Account-1", [ev(), ev(blob="x" * 300), ev()], 1)
        assert info.value.limit == 200
        assert info.value.size > 300
        assert info.value.type_name == "Test.Happened"
        await assert_unchanged(small, "Account-1", 1, 1)


async def test_empty_append_is_a_no_op(store: EventStore) -> None:
    """An empty append writes nothing, checks no version and records no command."""
    await store.append("Account-1", [ev()], 0)
    seen: list[Sequence[RecordedEvent]] = []
    store.add_commit_listener(seen.append)
    result = await store.append("Account-1", [], 7, command_id="cmd-empty")
    assert result.version == 1
    assert len(result.positions) == 0
    assert await store.find_command("cmd-empty") is None
    assert seen == []
    await assert_unchanged(store, "Account-1", 1, 1)


@pytest.mark.parametrize(
    "name",
    ["", "A" * 201, "Account-\n1", "Account-\x00", "Account-\x7f", 42, None, b"Account-1"],
    ids=["empty", "201-chars", "newline", "nul", "del", "int", "none", "bytes"],
)
async def test_invalid_stream_name_raises(store: EventStore, name: Any) -> None:
    """An empty, too long, control-character or non-str stream name raises InvalidStreamName."""
    with pytest.raises(InvalidStreamName):
        await store.append(name, [ev()], ANY)
    assert await store.head() == 0


async def test_longest_and_unicode_stream_names_are_accepted(store: EventStore) -> None:
    """A 200-character name and a non-ASCII name are valid streams."""
    for name in ["A" * 200, "Konto-Müller-ß-東京"]:
        await store.append(name, [ev()], 0)
        assert [e.stream for e in await store.read_stream(name)] == [name]


async def test_duplicate_command_raises_and_writes_nothing(store: EventStore) -> None:
    """A recorded command id raises DuplicateCommand with its record; nothing written."""
    first = await store.append("Account-1", [ev(), ev()], 0, command_id="cmd-1", reply={"ok": 1})
    with pytest.raises(DuplicateCommand) as info:
        await store.append("Account-2", [ev()], 0, command_id="cmd-1")
    assert info.value.command_id == "cmd-1"
    await assert_unchanged(store, "Account-2", 0, 2)
    record = await store.find_command("cmd-1")
    assert record is not None
    assert (record.command_id, record.stream, record.version) == ("cmd-1", "Account-1", 2)
    assert list(record.positions) == list(first.positions)
    assert record.reply == {"ok": 1}


async def test_find_command_reply_is_json_and_optional(store: EventStore) -> None:
    """find_command returns the reply decoded as JSON, None without a reply or a record."""
    await store.append("Account-1", [ev()], 0, command_id="with", reply={"pair": (1, 2)})
    await store.append("Account-1", [ev()], 1, command_id="without")
    with_reply = await store.find_command("with")
    without = await store.find_command("without")
    assert with_reply is not None
    assert with_reply.reply == {"pair": [1, 2]}
    assert without is not None
    assert without.reply is None
    assert await store.find_command("never") is None


async def test_failed_append_records_no_command(store: EventStore) -> None:
    """A conflicting append's command id is not recorded, so a retry can use it."""
    await store.append("Account-1", [ev()], 0)
    with pytest.raises(ConcurrencyError):
        await store.append("Account-1", [ev()], 0, command_id="cmd-1")
    assert await store.find_command("cmd-1") is None
    assert (await store.append("Account-1", [ev()], 1, command_id="cmd-1")).version == 2


# -- reading ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "versions"),
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"from_version": 3}, [3, 4, 5]),
        ({"to_version": 2}, [1, 2]),
        ({"from_version": 2, "to_version": 4}, [2, 3, 4]),
        ({"from_version": 4, "to_version": 4}, [4]),
        ({"from_version": 6}, []),
        ({"from_version": 4, "to_version": 2}, []),
        ({"to_version": 99}, [1, 2, 3, 4, 5]),
    ],
)
async def test_read_stream_bounds(
    store: EventStore, bounds: dict[str, Any], versions: list[int]
) -> None:
    """read_stream returns versions within from_version..to_version inclusive."""
    await store.append("Account-1", [ev(n=i) for i in range(1, 6)], 0)
    await store.append("Account-2", [ev()], 0)
    assert [e.version for e in await store.read_stream("Account-1", **bounds)] == versions


@pytest.mark.parametrize(
    ("kwargs", "versions"),
    [
        ({"limit": 2}, [1, 2]),
        ({"limit": 0}, []),
        ({"from_version": 2, "limit": 10}, [2, 3, 4, 5]),
        ({"backwards": True}, [5, 4, 3, 2, 1]),
        ({"backwards": True, "limit": 2}, [5, 4]),
        ({"backwards": True, "to_version": 3, "limit": 2}, [3, 2]),
        ({"backwards": True, "from_version": 2, "to_version": 4}, [4, 3, 2]),
    ],
)
async def test_read_stream_limit_and_direction(
    store: EventStore, kwargs: dict[str, Any], versions: list[int]
) -> None:
    """limit keeps the first events in read order; backwards reads from the top of the range."""
    await store.append("Account-1", [ev(n=i) for i in range(1, 6)], 0)
    assert [e.version for e in await store.read_stream("Account-1", **kwargs)] == versions


async def test_missing_stream_reads_empty(store: EventStore) -> None:
    """A stream that does not exist reads as [] and has version 0."""
    await store.append("Account-1", [ev()], 0)
    assert await store.read_stream("Account-2") == []
    assert await store.read_stream("Account-2", backwards=True) == []
    assert await store.stream_version("Account-2") == 0


async def test_read_all_pages_by_position(store: EventStore) -> None:
    """read_all(after, limit) returns the next events by position; paging visits each once."""
    for i in range(7):
        await store.append(f"Account-{i % 3}", [ev(n=i)], ANY)
    assert [e.position for e in await store.read_all()] == list(range(1, 8))
    assert [e.position for e in await store.read_all(2, 3)] == [3, 4, 5]
    assert await store.read_all(7) == []
    pages, after = [], 0
    while page := await store.read_all(after, 3):
        pages.append([e.position for e in page])
        after = page[-1].position
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]


@pytest.mark.parametrize("count", [0, 6, 7])
async def test_iter_all_yields_every_event_once(store: EventStore, count: int) -> None:
    """iter_all walks the log in pages, including a last page exactly full or empty."""
    for i in range(count):
        await store.append("Account-1", [ev(n=i)], ANY)
    positions = [e.position async for e in store.iter_all(page_size=3)]
    assert positions == list(range(1, count + 1))
    assert [e.position async for e in store.iter_all(4, page_size=2)] == list(range(5, count + 1))


async def test_read_all_filters_keep_original_positions(store: EventStore) -> None:
    """types and categories filter read_all; the events keep their global positions."""
    await store.append("Account-1", [ev("Account.Opened"), ev("Account.Deposited")], 0)
    await store.append("Order-1", [ev("Order.Placed")], 0)
    await store.append("Account-2", [ev("Account.Opened")], 0)
    await store.append("Order-2", [ev("Order.Placed"), ev("Order.Shipped")], 0)

    opened = await store.read_all(types=["Account.Opened"])
    assert [(e.position, e.stream) for e in opened] == [(1, "Account-1"), (4, "Account-2")]
    orders = await store.read_all(categories={"Order"})
    assert [e.position for e in orders] == [3, 5, 6]
    assert {e.category for e in orders} == {"Order"}
    both = await store.read_all(types=["Order.Placed"], categories=["Order"])
    assert [e.position for e in both] == [3, 5]
    assert [e.position for e in await store.read_all(3, 1, categories=["Order"])] == [5]
    assert await store.read_all(types=["Nothing.Happened"]) == []
    filtered = [e.position async for e in store.iter_all(page_size=1, types=["Order.Placed"])]
    assert filtered == [3, 5]


async def test_head_and_stream_version(store: EventStore) -> None:
    """head() is the last position (0 when empty); stream_version the stream's last version."""
    assert await store.head() == 0
    assert await store.stream_version("Account-1") == 0
    await store.append("Account-1", [ev(), ev()], 0)
    await store.append("Account-2", [ev()], 0)
    assert await store.head() == 3
    assert await store.stream_version("Account-1") == 2
    assert await store.stream_version("Account-2") == 1


async def test_global_positions_have_no_gaps(store: EventStore) -> None:
    """Positions across interleaved streams run 1, 2, 3, ... in append order."""
    expected = []
    for i in range(12):
        stream = f"Stream{i % 2}-{i % 3}"
        result = await store.append(stream, [ev(i=i)] * (i % 3 + 1), ANY)
        expected += [(p, stream) for p in result.positions]
    log = await store.read_all()
    assert [(e.position, e.stream) for e in log] == expected
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    assert await store.head() == len(log)


# -- what an event carries ----------------------------------------------------


async def test_metadata_round_trips(store: EventStore) -> None:
    """Correlation, causation, command ids and user keys come back as stored."""
    meta = {"correlation_id": "corr-1", "causation_id": "cause-1", "command_id": "cmd-1", "n": 3}
    await store.append("Account-1", [NewEvent("T", {"x": 1}, metadata=meta), ev()], 0)
    first, second = await store.read_stream("Account-1")
    assert first.metadata == meta
    assert second.metadata == {}
    assert (await store.read_all())[0].metadata == meta


async def test_event_ids_are_unique_and_kept(store: EventStore) -> None:
    """The store generates distinct event ids and keeps a supplied one."""
    given = "3b0c7d0e-4a8f-4c2e-9d2a-6f1e2b3c4d5e"
    await store.append("Account-1", [ev() for _ in range(20)], 0)
    await store.append("Account-1", [NewEvent("T", {}, event_id=given)], 20)
    events = await store.read_stream("Account-1")
    assert len({e.event_id for e in events}) == 21
    assert events[-1].event_id == given


async def test_recorded_at_is_aware_utc(store: EventStore) -> None:
    """recorded_at is a timezone-aware datetime in UTC."""
    await store.append("Account-1", [ev()], 0)
    (event,) = await store.read_stream("Account-1")
    assert event.recorded_at.tzinfo is not None
    assert event.recorded_at.utcoffset() == timedelta(0)


async def test_append_result_carries_the_events_recorded_at(store: EventStore) -> None:
    """AppendResult.recorded_at is the commit timestamp its events are read back with."""
    first = await store.append("Account-1", [ev(n=1), ev(n=2)], 0)
    second = await store.append("Account-2", [ev(n=3)], 0)
    events = await store.read_all()
    assert first.recorded_at is not None
    assert second.recorded_at is not None
    assert first.recorded_at.utcoffset() == timedelta(0)
    assert [e.recorded_at for e in events] == [first.recorded_at] * 2 + [second.recorded_at]
    assert first.recorded_at <= second.recorded_at


async def test_empty_append_result_has_no_recorded_at(store: EventStore) -> None:
    """An empty append recorded nothing, so its AppendResult.recorded_at is None."""
    await store.append("Account-1", [ev()], 0)
    result = await store.append("Account-1", [], ANY)
    assert result.recorded_at is None


async def test_schema_version_and_type_are_stored(store: EventStore) -> None:
    """Each event keeps its type name and schema version."""
    await store.append("Account-1", [NewEvent("A.V3", {}, schema_version=3), ev("A.V1")], 0)
    assert [(e.type, e.schema_version) for e in await store.read_stream("Account-1")] == [
        ("A.V3", 3),
        ("A.V1", 1),
    ]


@dataclasses.dataclass
class _Payload:
    amount: int
    tags: tuple[str, ...]


async def test_data_comes_back_as_decoded_json(store: EventStore) -> None:
    """A dataclass payload reads back as a dict, tuples as lists."""
    await store.append("Account-1", [NewEvent("T", _Payload(5, ("a", "b")))], 0)
    (event,) = await store.read_stream("Account-1")
    assert event.data == {"amount": 5, "tags": ["a", "b"]}


# -- start_append -------------------------------------------------------------


async def test_start_append_settles_as_append_would(store: EventStore) -> None:
    """start_append's future settles with append's result, or with its conflict."""
    first = store.start_append("Acc-1", [ev(n=1)], 0)
    stale = store.start_append("Acc-1", [ev(n=2)], 0)  # loses to the first
    result = await first
    assert (result.version, list(result.positions)) == (1, [1])
    with pytest.raises(ConcurrencyError) as info:
        await stale
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert [e.data for e in await store.read_stream("Acc-1")] == [{"n": 1}]


async def test_start_append_refuses_bad_input_at_the_call(store: EventStore) -> None:
    """Bad input raises from start_append itself and queues nothing."""
    with pytest.raises(InvalidStreamName):
        store.start_append("", [ev()], 0)
    with pytest.raises(TypeError):
        store.start_append("Acc-1", [ev()], -1)
    assert await store.head() == 0
