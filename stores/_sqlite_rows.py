"""Decoding SQLite event rows into RecordedEvents (tuple rows, orjson)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stores._types import RecordedEvent

__all__ = ["decode_rows", "from_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EMPTY = b"{}"  # most events carry no metadata: skip the decoder for them


def from_micros(micros: int) -> datetime:
    """An aware UTC datetime from integer microseconds since the epoch (exact)."""
    return _EPOCH + timedelta(microseconds=micros)


def decode_rows(rows: Iterable[Any], stream: str | None) -> list[RecordedEvent]:
    """Decode event rows into RecordedEvents.

    Rows are ``(position, stream, version, type, data, metadata,
    schema_version, event_id, recorded_at)``; with ``stream`` given, the
    stream column is absent (a read of one stream).
    """
    loads = orjson.loads
    stamps: dict[int, datetime] = {}  # one batch shares one timestamp
    out: list[RecordedEvent] = []
    append = out.append
    if stream is not None:
        for pos, ver, typ, data, meta, sv, eid, at in rows:
            ts = stamps.get(at)
            if ts is None:
                ts = stamps[at] = _EPOCH + timedelta(microseconds=at)
            meta_d = loads(meta) if meta != _EMPTY else {}
            append(RecordedEvent(pos, stream, ver, typ, loads(data), meta_d, sv, eid, ts))
    else:
        for pos, name, ver, typ, data, meta, sv, eid, at in rows:
            ts = stamps.get(at)
            if ts is None:
                ts = stamps[at] = _EPOCH + timedelta(microseconds=at)
            meta_d = loads(meta) if meta != _EMPTY else {}
            append(RecordedEvent(pos, name, ver, typ, loads(data), meta_d, sv, eid, ts))
    return out
