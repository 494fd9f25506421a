"""The codec every backend shares: stream names, JSON encoding, payload limits."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from stores import (
    MAX_STREAM_NAME,
    InvalidStreamName,
    NewEvent,
    PayloadTooLarge,
    SerializationError,
)
from stores._codec import decode, encode_events, encode_value, new_event_id, validate_stream


@dataclasses.dataclass
class _Inner:
    ok: int
    bad: Any


@dataclasses.dataclass
class _Outer:
    name: str
    inner: _Inner


# -- stream names ------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Account-1", "A", "A" * MAX_STREAM_NAME, "Konto-Müller", "Order-a b/c:d"]
)
def test_valid_stream_names_pass(name: str) -> None:
    """Printable names of 1-200 characters are returned unchanged."""
    assert validate_stream(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("A" * (MAX_STREAM_NAME + 1), "201 characters"),
        ("Account-\n1", "control"),
        ("Account-\t1", "control"),
        ("Account-\x00", "control"),
        ("Account-\u200b", "control"),
        (7, "must be a str, not int"),
        (None, "must be a str, not NoneType"),
        (b"Account-1", "must be a str, not bytes"),
    ],
)
def test_invalid_stream_names_raise(name: Any, message: str) -> None:
    """Empty, too long, non-printable and non-str names raise InvalidStreamName saying why."""
    with pytest.raises(InvalidStreamName, match=message):
        validate_stream(name)


def test_invalid_stream_name_is_a_value_error() -> None:
    """InvalidStreamName is also a ValueError, for callers that catch that."""
    with pytest.raises(ValueError, match="empty"):
        validate_stream("")


# -- encoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": 1, "b": object()}, "data['b'] (a object)"),
        ({"a": {"b": [1, 2, {3}]}}, "data['a']['b'][2] (a set)"),
        ([1, (2, object())], "data[1][1] (a object)"),
        (_Outer("x", _Inner(1, {1, 2})), "data.inner.bad (a set)"),
        ({"list": [_Inner(1, {"deep": object()})]}, "data['list'][0].bad['deep'] (a object)"),
        (object(), "data (a object)"),
    ],
    ids=["dict", "nested-dict-list", "list-tuple", "dataclass", "mixed", "top-level"],
)
def test_serialization_error_names_the_bad_field(value: Any, path: str) -> None:
    """SerializationError's message names the path to the first unencodable part."""
    with pytest.raises(SerializationError) as info:
        encode_value(value, "data")
    assert f"cannot encode {path} as JSON" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_encode_value_round_trips_json() -> None:
    """Encodable values (dataclasses, tuples) decode to plain JSON."""
    value = {"outer": _Outer("x", _Inner(1, None)), "pair": (1, 2)}
    assert decode(encode_value(value, "data")) == {
        "outer": {"name": "x", "inner": {"ok": 1, "bad": None}},
        "pair": [1, 2],
    }


def test_non_str_keys_are_refused_not_turned_into_str() -> None:
    """A dict key that is not a str raises SerializationError naming the dict: JSON would
    bring ``{7: 1}`` back as ``{"7": 1}``, and a replay would then differ from live state."""
    with pytest.raises(SerializationError, match=r"data\['counts'\] \(a dict\)"):
        encode_value({"counts": {7: 1}}, "data")
    with pytest.raises(SerializationError, match="data"):
        encode_events([NewEvent("T", {"counts": {7: 1}})], 1000)


def test_encode_events_names_event_type_and_field() -> None:
    """A bad event in a batch raises naming its type and field; nothing is returned."""
    events = [
        NewEvent("Good", {}),
        NewEvent("Account.Deposited", {"amount": 1, "note": object()}),
    ]
    with pytest.raises(SerializationError, match=r"event 'Account.Deposited' data\['note'\]"):
        encode_events(events, 1000)


def test_encode_events_names_bad_metadata() -> None:
    """Unencodable metadata is named as metadata."""
    events = [NewEvent("T", {}, metadata={"trace": {"span": object()}})]
    with pytest.raises(SerializationError, match=r"event 'T' metadata\['trace'\]\['span'\]"):
        encode_events(events, 1000)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "T"}, "NewEvent items, not dict"),
        (NewEvent("", {}), "non-empty str"),
        (NewEvent(3, {}), "non-empty str"),  # type: ignore[arg-type]
        (NewEvent("T", {}, schema_version=0), "schema_version must be an int from 1 to"),
        (NewEvent("T", {}, schema_version=True), "schema_version must be an int from 1 to"),
        (NewEvent("T", {}, schema_version=1.0), "schema_version must be an int from 1 to"),  # type: ignore[arg-type]
    ],
)
def test_encode_events_rejects_malformed_events(event: Any, message: str) -> None:
    """Items that are not well-formed NewEvents raise SerializationError saying why."""
    with pytest.raises(SerializationError, match=message):
        encode_events([event], 1000)


def test_encode_events_keeps_fields_and_generates_ids() -> None:
    """Encoded events carry type, JSON bytes, schema version and a given or new UUID."""
    given, generated = encode_events(
        [
            NewEvent("A", {"x": 1}, metadata={"m": 2}, schema_version=3, event_id="id-1"),
            NewEvent("B", {"y": 2}),
        ],
        1000,
    )
    type_, data, metadata, schema_version, event_id = given
    assert (type_, schema_version, event_id) == ("A", 3, "id-1")
    assert (decode(data), decode(metadata)) == ({"x": 1}, {"m": 2})
    assert decode(generated[2]) == {}
    assert uuid.UUID(generated[4]).version == 4


def test_new_event_ids_are_distinct_uuid4() -> None:
    """new_event_id returns distinct version-4 UUID strings."""
    ids = {new_event_id() for _ in range(600)}  # crosses two refills of the pool
    assert len(ids) == 600
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)  # canonical 8-4-4-4-12 lower-case


# -- payload limit ---------------------------------------------------------------


def _event_of_size(size: int) -> NewEvent:
    """An event whose data plus empty metadata (``{}``) encode to exactly ``size`` bytes."""
    # '{"b":""}' is 8 bytes and the empty metadata '{}' 2 more.
    return NewEvent("Big", {"b": "x" * (size - 10)})


def test_event_at_the_limit_is_accepted() -> None:
    """An event of exactly max_event_bytes encodes."""
    ((_, data, metadata, _, _),) = encode_events([_event_of_size(200)], 200)
    assert len(data) + len(metadata) == 200


def test_event_over_the_limit_raises_payload_too_large() -> None:
    """One byte over max_event_bytes raises PayloadTooLarge with type, size and limit."""
    with pytest.raises(PayloadTooLarge) as info:
        encode_events([NewEvent("Small", {}), _event_of_size(201)], 200)
    assert (info.value.type_name, info.value.size, info.value.limit) == ("Big", 201, 200)
    assert "201 bytes, over the limit of 200" in str(info.value)


def test_metadata_counts_towards_the_limit() -> None:
    """The size limit covers data and metadata together."""
    event = NewEvent("T", {}, metadata={"k": "x" * 200})
    with pytest.raises(PayloadTooLarge):
        encode_events([event], 200)
