"""Where a projector's read model and checkpoint live: the sink contract and shared helpers."""

from __future__ import annotations

import abc
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runtime._projection_errors import ProjectionConfigError
from runtime._projection_types import ParkedEvent
from stores import RecordedEvent

__all__ = [
    "PARKED_SCHEMA",
    "EventFailed",
    "Sink",
    "delete_parked",
    "insert_parked",
    "select_parked",
    "validate_name",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a usable projector name (it names files), else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProjectionConfigError(
            f"projector name must be 1-100 letters, digits, '_', '.' or '-' "
            f"(not starting with '.' or '-'), not {name!r}"
        )
    return name


class EventFailed(Exception):
    """Raised by a sink when applying a batch failed on one of its events.

    Attributes:
        index: The failed event's index in the batch.
        error: What was raised.
        handler: True when the handler raised (False: the sink itself failed,
            e.g. the database; such failures are never parked).
        applied_prefix: True when the events before ``index`` were applied and
            stay applied (an at-least-once sink); False when the whole batch
            was rolled back.
    """

    def __init__(
        self, index: int, error: BaseException, *, handler: bool, applied_prefix: bool
    ) -> None:
        super().__init__(f"event #{index} of the batch failed: {error!r}")
        self.index = index
        self.error = error
        self.handler = handler
        self.applied_prefix = applied_prefix


class Sink(abc.ABC):
    """A read model plus its checkpoint, as a projector drives it (private contract)."""

    pipelines = False
    """True when :meth:`pipeline` queues batches (False: it always returns False)."""

    @abc.abstractmethod
    async def checkpoint(self) -> int:
        """The durable checkpoint."""

    @abc.abstractmethod
    async def apply(self, events: Sequence[RecordedEvent], position: int) -> None:
        """Hand the events to the handler and make the checkpoint ``position``.

        Raises:
            EventFailed: an event failed (see its attributes for what stayed applied).
        """

    @abc.abstractmethod
    async def save(self, position: int) -> None:
        """Make the checkpoint ``position`` (no events)."""

    @abc.abstractmethod
    async def reset(self, position: int) -> None:
        """Set the checkpoint to ``position``, backwards too."""

    @abc.abstractmethod
    async def park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        """Record the event as parked and move the checkpoint to its position."""

    @abc.abstractmethod
    async def parked(self) -> list[ParkedEvent]:
        """The parked events, in position order."""

    @abc.abstractmethod
    async def retry_parked(self, event: RecordedEvent, attempts: int) -> bool:
        """Apply a parked event again; True (and unparked) when it succeeded."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections (idempotent)."""

    def pipeline(
        self,
        events: Sequence[RecordedEvent],
        position: int,
        done: Callable[[bool, Any], None],
        live: bool = False,
    ) -> bool:
        """Queue :meth:`apply` without waiting; False when this sink cannot.

        ``done(ok, value)`` runs on the event loop once the batch committed
        (``ok``), failed (``value`` is the error, usually :class:`EventFailed`)
        or was skipped (``value`` is ``SKIPPED``) because an earlier pipelined
        batch failed: batches after a failure are never applied until
        :meth:`rearm`. Batches are applied in the order they were queued.
        ``live``: the batch comes from the live feed (not from reading the
        log), so the sink may briefly hand it the GIL (``_projector_worker``).
        """
        return False

    def rearm(self) -> None:  # noqa: B027 - optional, like pipeline
        """Apply pipelined batches again after one failed (none may be queued)."""


# -- the dead-letter table, shared by the SQLite sinks ------------------------

PARKED_SCHEMA = """
CREATE TABLE IF NOT EXISTS _projection_parked (
    projector TEXT NOT NULL,
    position  INTEGER NOT NULL,
    event_id  TEXT NOT NULL,
    stream    TEXT NOT NULL,
    type      TEXT NOT NULL,
    error     TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    parked_at REAL NOT NULL,
    PRIMARY KEY (projector, position)
) WITHOUT ROWID
"""


def describe(error: BaseException) -> str:
    """An error as ``"Type: message"``."""
    return f"{type(error).__name__}: {error}"


def insert_parked(
    conn: sqlite3.Connection,
    projector: str,
    event: RecordedEvent,
    error: BaseException,
    attempts: int,
) -> None:
    """Insert (or update) a parked event; the caller owns the transaction."""
    conn.execute(
        "INSERT INTO _projection_parked VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (projector, position) DO UPDATE SET error = excluded.error, "
        "attempts = excluded.attempts, parked_at = excluded.parked_at",
        (
            projector,
            event.position,
            event.event_id,
            event.stream,
            event.type,
            describe(error),
            attempts,
            time.time(),
        ),
    )


def delete_parked(conn: sqlite3.Connection, projector: str, position: int) -> None:
    """Remove a parked event; the caller owns the transaction."""
    conn.execute(
        "DELETE FROM _projection_parked WHERE projector = ? AND position = ?",
        (projector, position),
    )


def select_parked(conn: sqlite3.Connection, projector: str) -> list[ParkedEvent]:
    """The parked events of a projector, in position order."""
    rows = conn.execute(
        "SELECT position, event_id, stream, type, error, attempts, parked_at "
        "FROM _projection_parked WHERE projector = ? ORDER BY position",
        (projector,),
    ).fetchall()
    return [
        ParkedEvent(p, i, s, t, e, a, datetime.fromtimestamp(at, UTC))
        for p, i, s, t, e, a, at in rows
    ]
