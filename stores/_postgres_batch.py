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

from stores._codec import EncodedEvent, decode
from stores._errors import ConcurrencyError, DuplicateCommand
from stores._types import ANY, AppendResult, CommandRecord, ExpectedVersion, RecordedEvent

__all__ = ["Pending", "Plan", "command_from_row", "event_from_row", "plan_batch"]


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


@dataclass(slots=True)
class Plan:
    """What one batch writes: column arrays for the batch statement, in position order."""

    accepted: list[Pending] = field(default_factory=list)
    rejected: list[Pending] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    metadata: list[bytes] = field(default_factory=list)
    schema_versions: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    final_streams: list[str] = field(default_factory=list)
    final_versions: list[int] = field(default_factory=list)
    cmd_ids: list[str] = field(default_factory=list)
    cmd_streams: list[str] = field(default_factory=list)
    cmd_versions: list[int] = field(default_factory=list)
    cmd_first: list[int] = field(default_factory=list)
    cmd_last: list[int] = field(default_factory=list)
    cmd_replies: list[bytes | None] = field(default_factory=list)
    head: int = 0

    def recorded(self, at: datetime) -> list[RecordedEvent]:
        """The accepted events as RecordedEvents (decoded), in position order."""
        return [
            RecordedEvent(
                position=self.positions[i],
                stream=self.streams[i],
                version=self.versions[i],
                type=self.types[i],
                data=decode(self.data[i]),
                metadata=decode(self.metadata[i]),
                schema_version=self.schema_versions[i],
                event_id=self.event_ids[i],
                recorded_at=at,
            )
            for i in range(len(self.positions))
        ]


def event_from_row(row: Sequence[Any]) -> RecordedEvent:
    """A RecordedEvent from an events row (``Statements`` column order)."""
    position, stream, version, type_, data, metadata, schema_version, event_id, at = row
    return RecordedEvent(
        position, stream, version, type_, decode(data), decode(metadata),
        schema_version, event_id, at,
    )  # fmt: skip


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """A CommandRecord from (command_id, stream, version, first, last, reply)."""
    command_id, stream, version, first, last, reply = row
    reply_value = None if reply is None else decode(reply)
    return CommandRecord(command_id, stream, version, range(first, last + 1), reply_value)


def plan_batch(
    batch: Sequence[Pending],
    head: int,
    versions: Mapping[str, int],
    commands: Mapping[str, CommandRecord],
) -> Plan:
    """Decide each append of ``batch`` in order, as if they ran one after another.

    Args:
        batch: The pending appends, in queue order.
        head: The last committed position (read under the write lock).
        versions: Current versions of the batch's existing streams.
        commands: Already recorded command ids among the batch's.

    Returns:
        The plan: accepted appends with ``result`` set, rejected ones with
        ``error`` set, and the column arrays to insert.
    """
    plan = Plan()
    current = dict(versions)
    seen: dict[str, CommandRecord] = dict(commands)
    touched: dict[str, int] = {}
    next_position = head + 1
    for p in batch:
        # A recorded command id wins over the version check, so a retried
        # command learns its first outcome (as the memory store does).
        if p.command_id is not None and p.command_id in seen:
            p.error = DuplicateCommand(p.command_id, seen[p.command_id])
            plan.rejected.append(p)
            continue
        actual = current.get(p.stream, 0)
        if p.expected is not ANY and p.expected != actual:
            p.error = ConcurrencyError(p.stream, p.expected, actual)
            plan.rejected.append(p)
            continue
        n = len(p.events)
        positions = range(next_position, next_position + n)
        for i, ev in enumerate(p.events):
            plan.positions.append(next_position + i)
            plan.streams.append(p.stream)
            plan.versions.append(actual + 1 + i)
            plan.types.append(ev.type)
            plan.data.append(ev.data)
            plan.metadata.append(ev.metadata)
            plan.schema_versions.append(ev.schema_version)
            plan.event_ids.append(ev.event_id)
        version = actual + n
        current[p.stream] = touched[p.stream] = version
        next_position += n
        p.result = AppendResult(p.stream, version, positions)
        if p.command_id is not None:
            reply: Any = None if p.reply is None else decode(p.reply)
            seen[p.command_id] = CommandRecord(p.command_id, p.stream, version, positions, reply)
            plan.cmd_ids.append(p.command_id)
            plan.cmd_streams.append(p.stream)
            plan.cmd_versions.append(version)
            plan.cmd_first.append(positions.start)
            plan.cmd_last.append(positions.stop - 1)
            plan.cmd_replies.append(p.reply)
        plan.accepted.append(p)
    # ON CONFLICT DO UPDATE may touch a row once per statement: one row per stream.
    plan.final_streams = list(touched)
    plan.final_versions = list(touched.values())
    plan.head = next_position - 1
    return plan
