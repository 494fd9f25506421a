"""One generation of a SQLite read model: its file, schema, checkpoint and dead letters.

A read model called ``balances`` in ``directory`` is the file
``balances.<generation>.sqlite``; the text file ``balances.current`` names the
live generation. A rebuild writes generation ``n + 1`` beside the live one
and swaps by replacing ``balances.current`` (``os.replace`` is atomic on
POSIX), so readers, in this process or another, always open a complete read
model. WAL files (``-wal``, ``-shm``) belong to a file *name*, which is why
the swap moves a pointer instead of renaming a database over a live one.

All methods here are blocking; the projector calls them in a worker thread
(``anyio.to_thread``), one at a time per file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime._projection_errors import ProjectionError
from runtime._projection_types import ParkedEvent
from runtime._projector_sink import (
    PARKED_SCHEMA,
    EventFailed,
    delete_parked,
    insert_parked,
    select_parked,
)
from stores import RecordedEvent

__all__ = [
    "SQLiteBatchHandler",
    "SQLiteFile",
    "SQLiteHandler",
    "current_generation",
    "generation_path",
    "open_read_model",
    "remove_generation",
    "write_generation",
]

SQLiteHandler = Callable[[sqlite3.Connection, RecordedEvent], None]
"""A SQLite read model's handler: apply one event through the open connection."""

SQLiteBatchHandler = Callable[[sqlite3.Connection, Sequence[RecordedEvent]], None]
"""A SQLite read model's batch handler: apply several events, in order, at once."""

_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS _projection_checkpoint (
    projector TEXT PRIMARY KEY,
    position  INTEGER NOT NULL
) WITHOUT ROWID
"""


def generation_path(directory: Path, name: str, generation: int) -> Path:
    """The file of one generation of a read model."""
    return directory / f"{name}.{generation}.sqlite"


def _pointer(directory: Path, name: str) -> Path:
    return directory / f"{name}.current"


def current_generation(directory: Path, name: str) -> int | None:
    """The live generation named by the pointer file, or None when there is none yet."""
    try:
        text = _pointer(directory, name).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ProjectionError(f"{_pointer(directory, name)} holds {text!r}, not a number") from exc


def write_generation(directory: Path, name: str, generation: int) -> None:
    """Point the read model at ``generation``, atomically and durably."""
    pointer = _pointer(directory, name)
    tmp = pointer.with_suffix(".current.tmp")
    with open(tmp, "w") as f:
        f.write(f"{generation}\n")
        f.flush()
        os.fsync(f.fileno())
    # os.replace is an atomic rename on POSIX: a reader sees the old or the new
    # pointer, never a torn one; fsync of the directory makes the rename durable.
    os.replace(tmp, pointer)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_generation(path: Path) -> None:
    """Delete a generation's file and its WAL companions (missing files are fine)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def open_read_model(directory: Path | str, name: str) -> sqlite3.Connection:
    """Open the live generation of a read model for reading (any process, blocking).

    Args:
        directory: The read model's directory.
        name: The projector's name.

    Returns:
        A ``sqlite3.Connection`` with ``query_only`` on; close it when done.

    Raises:
        ProjectionError: the read model has not been created yet.
    """
    directory = Path(directory)
    generation = current_generation(directory, name)
    if generation is None:
        raise ProjectionError(f"read model {name!r} in {directory} does not exist yet")
    conn = sqlite3.connect(generation_path(directory, name, generation), check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return conn


class _BatchFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


class SQLiteFile:
    """One generation of a read model and its connection (blocking; one thread at a time).

    Args:
        path: The database file.
        name: The projector's name (keys its checkpoint and parked rows).
        schema: SQL creating the read model's tables, run once on a new file.
        handler: Applies one event through the connection.
        batch_handler: Applies a batch at once (used instead of ``handler`` when given).
        synchronous: ``"NORMAL"`` for a live read model, ``"OFF"`` while a
            rebuild writes a file nobody reads yet.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        schema: str,
        handler: SQLiteHandler,
        *,
        batch_handler: SQLiteBatchHandler | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = path
        self.name = name
        self._schema = schema
        self._handler = handler
        self._batch_handler = batch_handler
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection."""
        if self._conn is None:
            raise ProjectionError(f"read model file {self.path} is not open")
        return self._conn

    def open(self) -> int:
        """Open (creating the schema on a new file); return the checkpoint."""
        # isolation_level=None: no implicit BEGIN, we draw every transaction line.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        # WAL: queries read committed data while the projector writes.
        # synchronous=NORMAL in WAL mode survives a process crash; a power loss
        # may roll back the last commits, but read model and checkpoint roll
        # back *together*, so those events are applied again: still exactly once
        # (https://www.sqlite.org/pragma.html#pragma_synchronous).
        conn.execute("PRAGMA journal_mode=WAL")
        self.set_synchronous(self._synchronous)
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = '_projection_checkpoint'"
        ).fetchone()
        if not exists:
            # executescript COMMITs anything pending, then runs the script as
            # written: our BEGIN/COMMIT makes schema + bookkeeping one transaction.
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{self._schema};\n{_CHECKPOINT_SCHEMA};\n"
                    f"{PARKED_SCHEMA};\nCOMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self.checkpoint()

    def set_synchronous(self, mode: str) -> None:
        """Set ``PRAGMA synchronous`` (``NORMAL`` or ``OFF``)."""
        if mode not in ("NORMAL", "OFF", "FULL"):
            raise ValueError(mode)
        self.conn.execute(f"PRAGMA synchronous={mode}")

    def checkpoint(self) -> int:
        """The checkpoint stored in this file (0 when none)."""
        row = self.conn.execute(
            "SELECT position FROM _projection_checkpoint WHERE projector = ?", (self.name,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _set_checkpoint(self, position: int) -> None:
        self.conn.execute(
            "INSERT INTO _projection_checkpoint VALUES (?, ?) "
            "ON CONFLICT (projector) DO UPDATE SET position = excluded.position",
            (self.name, position),
        )

    def _transaction(self, body: Callable[[sqlite3.Connection], None]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def apply(self, events: Sequence[RecordedEvent], position: int) -> None:
        """Apply a batch and set the checkpoint in ONE transaction (exactly once).

        Raises:
            EventFailed: an event failed; the whole batch was rolled back.
        """
        handler = self._handler
        batch_handler = self._batch_handler
        name = self.name

        def body(conn: sqlite3.Connection) -> None:
            if batch_handler is not None:
                try:
                    batch_handler(conn, events)
                except Exception as exc:
                    raise _BatchFailed(exc) from exc
            else:
                for index, event in enumerate(events):
                    try:
                        handler(conn, event)
                    except Exception as exc:
                        raise EventFailed(index, exc, handler=True, applied_prefix=False) from exc
            conn.execute(
                "INSERT INTO _projection_checkpoint VALUES (?, ?) "
                "ON CONFLICT (projector) DO UPDATE SET position = excluded.position",
                (name, position),
            )

        try:
            self._transaction(body)
        except EventFailed:
            raise
        except _BatchFailed as failed:
            raise self._locate(events, failed.error) from failed.error
        except Exception as exc:
            raise EventFailed(0, exc, handler=False, applied_prefix=False) from exc

    def _locate(self, events: Sequence[RecordedEvent], error: Exception) -> EventFailed:
        """Find which event of a failed batch the batch handler fails on (rolled back)."""
        batch_handler = self._batch_handler
        assert batch_handler is not None
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, event in enumerate(events):
                try:
                    batch_handler(conn, [event])
                except Exception as exc:
                    return EventFailed(index, exc, handler=True, applied_prefix=False)
        finally:
            conn.execute("ROLLBACK")
        # Each event alone went through: blame the first (the projector retries it).
        return EventFailed(0, error, handler=True, applied_prefix=False)

    def save(self, position: int) -> None:
        """Set the checkpoint alone."""
        self._transaction(lambda conn: self._set_checkpoint(position))

    def park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        """Park an event and move the checkpoint past it, in one transaction."""

        def body(conn: sqlite3.Connection) -> None:
            insert_parked(conn, self.name, event, error, attempts)
            self._set_checkpoint(event.position)

        self._transaction(body)

    def parked(self) -> list[ParkedEvent]:
        """The parked events."""
        return select_parked(self.conn, self.name)

    def retry_parked(self, event: RecordedEvent, attempts: int) -> bool:
        """Apply a parked event and unpark it in one transaction; on failure update its row."""

        def body(conn: sqlite3.Connection) -> None:
            if self._batch_handler is not None:
                self._batch_handler(conn, [event])
            else:
                self._handler(conn, event)
            delete_parked(conn, self.name, event.position)

        try:
            self._transaction(body)
        except Exception as exc:
            error = exc
            self._transaction(lambda conn: insert_parked(conn, self.name, event, error, attempts))
            return False
        return True

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
