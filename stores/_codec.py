"""Validation and JSON encoding shared by every backend (orjson)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from stores._errors import InvalidStreamName, PayloadTooLarge, SerializationError
from stores._types import NewEvent

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_STREAM_NAME",
    "EncodedEvent",
    "decode",
    "encode_events",
    "encode_value",
    "new_event_id",
    "validate_stream",
]

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
MAX_STREAM_NAME = 200

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_EMPTY_META = b"{}"


def validate_stream(stream: object) -> str:
    """Return ``stream`` if it is a valid stream name, else raise InvalidStreamName."""
    if not isinstance(stream, str):
        raise InvalidStreamName(f"stream name must be a str, not {type(stream).__name__}")
    if not stream:
        raise InvalidStreamName("stream name is empty")
    if len(stream) > MAX_STREAM_NAME:
        raise InvalidStreamName(
            f"stream name is {len(stream)} characters, over the limit of {MAX_STREAM_NAME}"
        )
    if not stream.isprintable():
        raise InvalidStreamName(f"stream name {stream!r} holds control characters")
    return stream


def new_event_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID as a string.

    Formatted by hand: building a ``uuid.UUID`` costs several microseconds per
    event on the append hot path; this is about four times cheaper.
    """
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _find_bad_field(value: Any, path: str) -> str | None:
    """Walk a value and name the first part orjson cannot encode."""
    try:
        orjson.dumps(value, option=_OPTS)
    except TypeError:
        pass
    else:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found = _find_bad_field(getattr(value, f.name), f"{path}.{f.name}")
            if found:
                return found
    elif isinstance(value, Mapping):
        for k, v in value.items():
            found = _find_bad_field(v, f"{path}[{k!r}]")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _find_bad_field(v, f"{path}[{i}]")
            if found:
                return found
    return f"{path} (a {type(value).__name__})"


def encode_value(value: Any, what: str) -> bytes:
    """Encode ``value`` as JSON, or raise SerializationError naming the bad field."""
    try:
        return orjson.dumps(value, option=_OPTS)
    except TypeError as exc:
        bad = _find_bad_field(value, what) or what
        raise SerializationError(f"cannot encode {bad} as JSON: {exc}") from exc


class EncodedEvent:
    """An event validated and encoded, ready for a backend to insert."""

    __slots__ = ("data", "event_id", "metadata", "schema_version", "type")

    def __init__(
        self, type: str, data: bytes, metadata: bytes, schema_version: int, event_id: str
    ) -> None:
        self.type = type
        self.data = data
        self.metadata = metadata
        self.schema_version = schema_version
        self.event_id = event_id


def encode_events(events: Sequence[NewEvent], max_event_bytes: int) -> list[EncodedEvent]:
    """Validate and encode a batch of new events (all or nothing).

    Raises:
        SerializationError: an event's data or metadata cannot be encoded, or
            an item is not a NewEvent.
        PayloadTooLarge: an encoded event is over ``max_event_bytes``.
    """
    out: list[EncodedEvent] = []
    for ev in events:
        if not isinstance(ev, NewEvent):
            raise SerializationError(f"append takes NewEvent items, not {type(ev).__name__}")
        if not isinstance(ev.type, str) or not ev.type:
            raise SerializationError(f"event type name must be a non-empty str, not {ev.type!r}")
        if type(ev.schema_version) is not int or ev.schema_version < 1:
            raise SerializationError(
                f"event {ev.type!r}: schema_version must be an int >= 1, not {ev.schema_version!r}"
            )
        data = encode_value(ev.data, f"event {ev.type!r} data")
        meta = (
            encode_value(ev.metadata, f"event {ev.type!r} metadata") if ev.metadata else _EMPTY_META
        )
        size = len(data) + len(meta)
        if size > max_event_bytes:
            raise PayloadTooLarge(ev.type, size, max_event_bytes)
        out.append(
            EncodedEvent(ev.type, data, meta, ev.schema_version, ev.event_id or new_event_id())
        )
    return out


def decode(raw: bytes | str) -> Any:
    """Decode a JSON payload."""
    return orjson.loads(raw)
