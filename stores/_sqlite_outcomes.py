"""A :func:`~stores._sqlite_batch.write_batch` answer as each append's result.

:func:`outcomes` turns a batch's ``(commit_us, first_position, results)``
into each caller's AppendResult or error, on the event loop;
:func:`error_as_tuple` is the writer process's side: an append's own error
as plain values for ``marshal``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import orjson

from stores._errors import ConcurrencyError, DuplicateCommand, StoreError
from stores._sqlite_batch import BatchItem, BatchOutcome
from stores._sqlite_rows import from_micros
from stores._types import AppendResult, CommandRecord

__all__ = ["error_as_tuple", "outcomes"]

_new_result = object.__new__
# A frozen dataclass's __init__ sets each field through object.__setattr__;
# the slots' own descriptors do the same in about half the time, which counts
# here: outcomes() builds one per committed append, on the event loop.
if [f.name for f in dataclasses.fields(AppendResult)] != [
    "stream",
    "version",
    "positions",
    "recorded_at",
]:  # pragma: no cover - guards the fast constructor below against a new field
    raise RuntimeError("AppendResult's fields changed: update outcomes()")
_set_stream = AppendResult.__dict__["stream"].__set__
_set_version = AppendResult.__dict__["version"].__set__
_set_positions = AppendResult.__dict__["positions"].__set__
_set_recorded_at = AppendResult.__dict__["recorded_at"].__set__


def outcomes(items: list[BatchItem], outcome: BatchOutcome) -> list[AppendResult | StoreError]:
    """Each request's AppendResult (or the error it failed with alone), in batch order.

    Runs on the event loop for every append under load, so a committed
    append's AppendResult is built inline, through the slots' descriptors,
    without a call per append.
    """
    commit_us, position, results = outcome
    at = from_micros(commit_us) if commit_us is not None else None
    new, cls = _new_result, AppendResult
    out: list[AppendResult | StoreError] = []
    add = out.append
    for item, result in zip(items, results, strict=True):
        if type(result) is int:
            n = len(item[1])
            ok = new(cls)
            _set_stream(ok, item[0])
            _set_version(ok, result)
            _set_positions(ok, range(position, position + n))
            _set_recorded_at(ok, at)
            position += n
            add(ok)
        elif isinstance(result, StoreError):
            add(result)
        else:
            add(_error_from_tuple(item[0], cast(tuple[Any, ...], result)))
    return out


def _error_from_tuple(stream: str, result: tuple[Any, ...]) -> StoreError:
    # The writer process's form of an append's own error (error_as_tuple).
    if result[0] == "c":
        return ConcurrencyError(stream, result[1], result[2])
    _, cid, stream, version, first, last, reply = result
    return DuplicateCommand(
        cid, CommandRecord(cid, stream, version, range(first, last + 1), orjson.loads(reply))
    )


def error_as_tuple(error: StoreError) -> tuple[Any, ...]:
    """An append's own error as plain values (marshal cannot take exceptions)."""
    if isinstance(error, ConcurrencyError):
        return ("c", error.expected, error.actual)
    if isinstance(error, DuplicateCommand):
        rec = error.record
        return (
            "d",
            rec.command_id,
            rec.stream,
            rec.version,
            rec.positions[0],
            rec.positions[-1],
            orjson.dumps(rec.reply),
        )
    raise TypeError(f"unexpected append error {error!r}")
