"""Group-commit planning for :class:`stores.PostgresStore` (pure Python, no I/O).

The writer takes the schema's write lock, reads the head, the batch's stream
versions and recorded command ids, then calls :func:`plan_batch` to decide, in
queue order, which appends are valid and what versions and positions they get.
Only the valid ones are inserted, so a conflicting append fails alone and the
insert can never hit a unique violation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# orjson.loads itself, not the codec's one-line ``decode`` wrapper: these run
# once or twice per event on the write and read paths.
from orjson import loads

from stores._codec import EncodedEvent
from stores._errors import ConcurrencyError, DuplicateCommand
from stores._types import ANY, AppendResult, CommandRecord, ExpectedVersion, RecordedEvent

__all__ = ["EventRow", "Pending", "Plan", "command_from_row", "event_from_row", "plan_batch"]


@dataclass(slots=True, eq=False)
class Pending:
    """One caller's append waiting in the writer's queue."""

    stream: str
    expected: ExpectedVersion
    events: list[EncodedEvent]
    command_id: str | None
    reply: bytes | None
    future: asyncio.Future[AppendResult]
    # Filled by plan_batch:
    result: AppendResult | None = None
    error: Exception | None = None


EventRow = tuple[int, str, int, str, bytes, bytes, int, str]
"""One event to insert: (position, stream, version, type, data, metadata, schema_version, id)."""


@dataclass(slots=True)
class Plan:
    """What one batch writes: its event rows in position order, stream versions, commands."""

    at: datetime
    accepted: list[Pending] = field(default_factory=list)
    rejected: list[Pending] = field(default_factory=list)
    rows: list[EventRow] = field(default_factory=list)
    final_streams: list[str] = field(default_factory=list)
    final_versions: list[int] = field(default_factory=list)
    cmd_ids: list[str] = field(default_factory=list)
    cmd_streams: list[str] = field(default_factory=list)
    cmd_versions: list[int] = field(default_factory=list)
    cmd_first: list[int] = field(default_factory=list)
    cmd_last: list[int] = field(default_factory=list)
    cmd_replies: list[bytes | None] = field(default_factory=list)
    head: int = 0

    def columns(self) -> list[tuple[Any, ...]]:
        """The event rows as eight column arrays, for the batch statement's ``unnest``."""
        # zip(*rows) transposes in C: cheaper than eight list appends per event.
        return list(zip(*self.rows, strict=True)) if self.rows else [()] * 8

    def recorded(self) -> list[RecordedEvent]:
        """The accepted events as RecordedEvents (decoded), in position order."""
        at = self.at
        return [
            RecordedEvent(p, s, v, t, loads(d), loads(m), sv, i, at)
            for p, s, v, t, d, m, sv, i in self.rows
        ]


def event_from_row(row: Sequence[Any]) -> RecordedEvent:
    """A RecordedEvent from an events row (``Statements`` column order)."""
    position, stream, version, type_, data, metadata, schema_version, event_id, at = row
    return RecordedEvent(
        position, stream, version, type_, loads(data), loads(metadata),
        schema_version, event_id, at,
    )  # fmt: skip


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """A CommandRecord from (command_id, stream, version, first, last, reply)."""
    command_id, stream, version, first, last, reply = row
    reply_value = None if reply is None else loads(reply)
    return CommandRecord(command_id, stream, version, range(first, last + 1), reply_value)


def plan_batch(
    batch: Sequence[Pending],
    head: int,
    versions: Mapping[str, int],
    commands: Mapping[str, CommandRecord],
    at: datetime,
) -> Plan:
    """Decide each append of ``batch`` in order, as if they ran one after another.

    Args:
        batch: The pending appends, in queue order.
        head: The last committed position (read under the write lock).
        versions: Current versions of the batch's existing streams.
        commands: Already recorded command ids among the batch's.
        at: The batch's ``recorded_at`` timestamp.

    Returns:
        The plan: accepted appends with ``result`` set, rejected ones with
        ``error`` set, and the rows to insert.
    """
    plan = Plan(at)
    current = dict(versions)
    seen: dict[str, CommandRecord] = dict(commands)
    touched: dict[str, int] = {}
    add_row = plan.rows.append
    accept = plan.accepted.append
    position = head
    # This loop runs once per append of every batch: locals only, no
    # attribute lookups or per-column appends in the inner loop.
    for p in batch:
        # A recorded command id wins over the version check, so a retried
        # command learns its first outcome (as the memory store does).
        command_id = p.command_id
        if command_id is not None and command_id in seen:
            p.error = DuplicateCommand(command_id, seen[command_id])
            plan.rejected.append(p)
            continue
        stream = p.stream
        version = current.get(stream, 0)
        expected = p.expected
        if expected is not ANY and expected != version:
            p.error = ConcurrencyError(stream, expected, version)
            plan.rejected.append(p)
            continue
        first = position + 1
        for type_, data, metadata, schema_version, event_id in p.events:
            position += 1
            version += 1
            add_row((position, stream, version, type_, data, metadata, schema_version, event_id))
        current[stream] = touched[stream] = version
        positions = range(first, position + 1)
        p.result = AppendResult(stream, version, positions, at)
        if command_id is not None:
            reply: Any = None if p.reply is None else loads(p.reply)
            seen[command_id] = CommandRecord(command_id, stream, version, positions, reply)
            plan.cmd_ids.append(command_id)
            plan.cmd_streams.append(stream)
            plan.cmd_versions.append(version)
            plan.cmd_first.append(first)
            plan.cmd_last.append(position)
            plan.cmd_replies.append(p.reply)
        accept(p)
    # ON CONFLICT DO UPDATE may touch a row once per statement: one row per stream.
    plan.final_streams = list(touched)
    plan.final_versions = list(touched.values())
    plan.head = position
    return plan
