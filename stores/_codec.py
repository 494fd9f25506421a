"""Validation and JSON encoding shared by every backend (orjson)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from stores._errors import CorruptSnapshot, InvalidStreamName, PayloadTooLarge, SerializationError
from stores._types import ANY, NewEvent, Snapshot

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_STREAM_NAME",
    "EncodedEvent",
    "decode",
    "encode_events",
    "encode_value",
    "new_event_id",
    "MAX_INT64",
    "MAX_SCHEMA_VERSION",
    "check_append_args",
    "check_checkpoint",
    "check_position",
    "check_snapshot_args",
    "check_text",
    "check_unicode",
    "validate_stream",
]

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
MAX_STREAM_NAME = 200

MAX_INT64 = 2**63 - 1
"""The largest version, position or expected version: SQLite's INTEGER and
PostgreSQL's ``bigint`` are 64-bit. A larger value is refused in the caller's
task (it would fail the driver's binding inside the writer's whole batch)."""
MAX_SCHEMA_VERSION = 2**31 - 1
"""The largest schema version: PostgreSQL stores it as ``integer``; every
backend keeps the same bound."""

_OPTS = orjson.OPT_SERIALIZE_NUMPY
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


_ID_BATCH = 256  # ids drawn per os.urandom call
_spare_ids: list[str] = []
# RFC 4122 version 4: byte 6's high nibble is 0100; byte 8's top bits are 10.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
# Where each of an id's 32 hex digits goes in its 36-character 8-4-4-4-12 form.
_SPOTS = [(p, p + (p >= 8) + (p >= 12) + (p >= 16) + (p >= 20)) for p in range(32)]


def _refill_ids() -> None:
    # Formatted 256 at a time with slice assignments (C loops): ~0.23 us an id
    # against ~0.53 for five slices and an f-string each.
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    digits = raw.hex().encode()
    out = bytearray(b"-" * (36 * _ID_BATCH))
    for p, q in _SPOTS:
        out[q::36] = digits[p::32]
    text = out.decode()
    _spare_ids.extend([text[i : i + 36] for i in range(0, len(text), 36)])


def _forget_ids() -> None:
    # A forked child must not hand out the ids its parent holds too.
    _spare_ids.clear()


os.register_at_fork(after_in_child=_forget_ids)


def check_unicode(value: str, what: str) -> str:
    """Return ``value`` if UTF-8 can encode it (no lone surrogates), else raise.

    Checked in the caller's task, so one append's bad text fails alone
    instead of its writer's whole batch.

    Raises:
        SerializationError: ``value`` holds a lone surrogate.
    """
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise SerializationError(f"{what} {value!r} is not valid Unicode: {exc}") from exc
    return value


def check_text(value: str, what: str) -> str:
    """Return ``value`` if every backend can store it as a key, else raise.

    No NUL (PostgreSQL ``text`` cannot hold it, and SQLite's JSON functions
    stop at it) and no lone surrogates (UTF-8 cannot encode them).

    Raises:
        SerializationError: ``value`` holds a NUL or a lone surrogate.
    """
    if "\x00" in value:
        raise SerializationError(f"{what} {value!r} holds a NUL character")
    return check_unicode(value, what)


def _check_count(value: object, what: str, low: int, high: int = MAX_INT64) -> None:
    if type(value) is not int or not low <= value <= high:
        raise TypeError(f"{what} must be an int from {low} to {high}, not {value!r}")


def check_append_args(expected_version: object, command_id: object) -> None:
    """Validate ``append``'s ``expected_version`` and ``command_id`` arguments.

    Raises:
        TypeError: ``expected_version`` is not an int from 0 to ``MAX_INT64``
            or ``ANY``, or ``command_id`` is not a str or None.
        SerializationError: ``command_id`` holds a NUL or is not valid Unicode.
    """
    if expected_version is not ANY and (
        type(expected_version) is not int or not 0 <= expected_version <= MAX_INT64
    ):
        raise TypeError(
            f"expected_version must be an int from 0 to {MAX_INT64} or ANY,"
            f" not {expected_version!r}"
        )
    if command_id is not None:
        if not isinstance(command_id, str):
            raise TypeError(f"command_id must be a str or None, not {command_id!r}")
        check_text(command_id, "command id")


def check_snapshot_args(version: object, schema_version: object) -> None:
    """Validate ``save_snapshot``'s ``version`` and ``schema_version``.

    Raises:
        TypeError: ``version`` is not an int from 0 to ``MAX_INT64``, or
            ``schema_version`` not one from 1 to ``MAX_SCHEMA_VERSION``.
    """
    _check_count(version, "snapshot version", 0)
    _check_count(schema_version, "snapshot schema_version", 1, MAX_SCHEMA_VERSION)


def check_checkpoint(name: object, position: object = 0) -> None:
    """Validate a consumer's checkpoint ``name`` and ``position``.

    Raises:
        TypeError: ``name`` is not a non-empty str, or ``position`` not an
            int from 0 to ``MAX_INT64``.
        SerializationError: ``name`` holds a NUL or is not valid Unicode.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a consumer name must be a non-empty str, not {name!r}")
    check_text(name, "consumer name")
    check_position(position)


def check_position(position: object) -> None:
    """Validate a checkpoint ``position`` (its consumer's name already checked).

    Raises:
        TypeError: ``position`` is not an int from 0 to ``MAX_INT64``.
    """
    _check_count(position, "checkpoint position", 0)


def new_event_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID as a string.

    Formatted by hand, 256 at a time (building a ``uuid.UUID`` costs several
    microseconds), into a pool filled by one ``os.urandom`` call per 256 ids
    (the runtime's write path draws its events' ids here too):
    ``os.urandom`` releases the GIL around its ``getrandom`` system call, and
    with the store's writer thread busy in Python, getting the GIL back can
    take up to the interpreter's switch interval (5 ms), once per event. The
    pool is emptied in a forked child (``os.register_at_fork``), so parent and
    child never share ids. ``list.pop`` is atomic under the GIL, so threads
    never get the same id.
    """
    while True:  # another thread may empty a fresh pool before we pop
        try:
            return _spare_ids.pop()
        except IndexError:
            _refill_ids()


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


EncodedEvent = tuple[str, bytes, bytes, int, str]
"""An event validated and encoded, ready for a backend to insert:
``(type, data, metadata, schema_version, event_id)``.

A plain tuple, not a class: it holds only strings, bytes and an int, so
CPython's cyclic GC untracks it at the first collection it survives
(``_PyTuple_MaybeUntrack``; exact tuples only, not subclasses such as a
NamedTuple) instead of promoting it with every append still waiting for its
commit. Building one is also cheaper than calling an ``__init__``.
"""


def encode_events(events: Sequence[NewEvent], max_event_bytes: int) -> list[EncodedEvent]:
    """Validate and encode a batch of new events (all or nothing).

    Raises:
        SerializationError: an event's data or metadata cannot be encoded, or
            an item is not a NewEvent.
        PayloadTooLarge: an encoded event is over ``max_event_bytes``.
    """
    out: list[EncodedEvent] = []
    dumps = orjson.dumps
    for ev in events:
        if type(ev) is not NewEvent and not isinstance(ev, NewEvent):
            raise SerializationError(f"append takes NewEvent items, not {type(ev).__name__}")
        name = ev.type
        if not isinstance(name, str) or not name:
            raise SerializationError(f"event type name must be a non-empty str, not {name!r}")
        schema_version = ev.schema_version
        if type(schema_version) is not int or not 1 <= schema_version <= MAX_SCHEMA_VERSION:
            raise SerializationError(
                f"event {name!r}: schema_version must be an int from 1 to"
                f" {MAX_SCHEMA_VERSION}, not {schema_version!r}"
            )
        event_id = ev.event_id
        if not event_id:
            event_id = new_event_id()
        elif not isinstance(event_id, str):
            raise SerializationError(f"event {name!r}: event_id must be a str, not {event_id!r}")
        try:
            data = dumps(ev.data, option=_OPTS)
        except TypeError:
            data = encode_value(ev.data, f"event {name!r} data")  # raises, naming the field
        meta = encode_value(ev.metadata, f"event {name!r} metadata") if ev.metadata else _EMPTY_META
        size = len(data) + len(meta)
        if size > max_event_bytes:
            raise PayloadTooLarge(name, size, max_event_bytes)
        out.append((name, data, meta, schema_version, event_id))
    return out


def decode(raw: bytes | str) -> Any:
    """Decode a JSON payload."""
    return orjson.loads(raw)


def decode_snapshot(
    stream: str, version: int, raw: bytes, schema_version: int, recorded_at: datetime
) -> Snapshot:
    """A stored snapshot as a :class:`Snapshot`, its state decoded.

    Raises:
        CorruptSnapshot: the stored state is not valid JSON.
    """
    try:
        state = orjson.loads(raw)
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise CorruptSnapshot(f"snapshot of {stream!r} at version {version}: {exc}") from exc
    return Snapshot(stream, version, state, schema_version, recorded_at)


def split_replay_rows(
    stream: str, rows: list[Any], recorded_at: Callable[[Any], datetime]
) -> tuple[Snapshot | None, list[tuple[int, str, int, Any]]]:
    """Decode the rows of a backend's one-statement ``read_replay``.

    Each row is ``(version, type, schema_version, data or state, recorded_at)``:
    the snapshot's row (at most one) is the one without a type, as events
    always have one; ``recorded_at`` turns its stored time into a datetime.

    Raises:
        CorruptSnapshot: the snapshot's state is not valid JSON.
    """
    snapshot = None
    # The statements put the snapshot's row first; the scan does not rely on it.
    at_row = next((i for i, row in enumerate(rows) if row[1] is None), None)
    if at_row is not None:
        version, _, schema_version, raw, at = rows.pop(at_row)
        snapshot = decode_snapshot(stream, version, raw, schema_version, recorded_at(at))
    loads = orjson.loads
    return snapshot, [(v, type_, sv, loads(data)) for v, type_, sv, data, _ in rows]
