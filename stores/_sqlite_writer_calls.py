"""What :class:`SQLiteStore` runs on its writer's connection besides batches.

Snapshots, checkpoints and ``pragmas()`` go through the writer's connection,
between its batches: on the writer thread, or in the writer process when it
is up. A mixin of its own module, like the store's reads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio

from stores._codec import check_checkpoint, check_snapshot_args, encode_value, validate_stream
from stores._errors import StoreUnavailable
from stores._sqlite_consumer import SET_CHECKPOINT_SQL
from stores._sqlite_schema import read_pragmas
from stores._sqlite_writer_process import WriterProcess

__all__ = ["SQLiteWriterCalls"]


class SQLiteWriterCalls:
    """Snapshot, checkpoint and pragma calls of :class:`SQLiteStore`, mixed into it.

    The store owns the writer's connection, its thread and its process; this
    class only declares what it uses.
    """

    _process: WriterProcess | None
    _executor: ThreadPoolExecutor | None
    _writer_conn: sqlite3.Connection | None

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    async def _write_aux(self, sql: str, params: Sequence[Any]) -> None:
        """Run one autocommit write (snapshot, checkpoint) on the writer's thread.

        Sharing the writer's connection and thread (between batches) means our
        own writes never wait on each other's lock through sqlite's sleeping
        busy handler; other processes are waited for up to busy_timeout.
        """
        self._check_open()
        process = self._process
        if process is not None and process.usable:
            # Through the writer process, between its batches, like below.
            with anyio.CancelScope(shield=True):
                await process.call(("aux", sql, tuple(params)))
            return
        assert self._executor is not None
        assert self._writer_conn is not None
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._writer_conn.execute, sql, params
        )
        try:
            # Shielded: the thread runs the statement regardless, so the
            # caller always learns its outcome.
            with anyio.CancelScope(shield=True):
                await future
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite write failed: {exc}") from exc

    # -- snapshots ----------------------------------------------------------

    async def save_snapshot(
        self, stream: str, version: int, state: Any, schema_version: int = 1
    ) -> None:
        """Save a snapshot; the same (stream, version) overwrites (see EventStore)."""
        validate_stream(stream)
        check_snapshot_args(version, schema_version)
        data = encode_value(state, f"snapshot state of {stream!r}")
        await self._write_aux(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, version) DO UPDATE"
            " SET state = excluded.state, schema_version = excluded.schema_version,"
            " recorded_at = excluded.recorded_at",
            (stream, version, data, schema_version, time.time_ns() // 1000),
        )

    # -- consumers ----------------------------------------------------------

    async def set_checkpoint(self, name: str, position: int) -> None:
        """Move a checkpoint forward; a position at or below it is ignored."""
        check_checkpoint(name, position)
        await self._write_aux(SET_CHECKPOINT_SQL, (name, position))

    async def reset_checkpoint(self, name: str, position: int = 0) -> None:
        """Set a checkpoint to ``position``, backwards too."""
        check_checkpoint(name, position)
        await self._write_aux(
            "INSERT INTO checkpoints (name, position) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

    # -- operations ---------------------------------------------------------

    async def pragmas(self, *names: str) -> dict[str, Any]:
        """Read PRAGMA values on the writer's connection (diagnostics, benchmark floors).

        Args:
            *names: Pragma names, e.g. ``"synchronous"``, ``"cache_size"``.

        Returns:
            Each name mapped to the value ``PRAGMA name`` reports (None for a
            name SQLite does not know: it answers those with no row).

        Raises:
            ValueError: a name is not a plain identifier.
            StoreClosed: the store is not open.
        """
        for name in names:
            if not (isinstance(name, str) and name.isidentifier()):
                raise ValueError(f"not a pragma name: {name!r}")
        self._check_open()
        process = self._process
        if process is not None and process.usable:
            values: dict[str, Any] = await process.call(("pragmas", list(names)))
            return values
        assert self._executor is not None
        conn = self._writer_conn
        assert conn is not None

        def read() -> dict[str, Any]:
            return read_pragmas(conn, names)

        # On the writer's own thread, which owns the connection: serial with batches.
        return await asyncio.get_running_loop().run_in_executor(self._executor, read)
