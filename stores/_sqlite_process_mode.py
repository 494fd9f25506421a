"""When :class:`SQLiteStore` runs a writer process (``writer="auto"`` or ``"process"``).

The process itself (spawning it, the pipe protocol) is
``_sqlite_writer_process``; this mixin decides when there is one: at open
with ``writer="process"``, at the first large batch with ``writer="auto"``,
and what happens when it dies (``auto``: the writer thread takes everything
again; ``process``: appends fail until the store is reopened).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from stores._errors import StoreUnavailable
from stores._sqlite_schema import Durability
from stores._sqlite_writer import LARGE_BATCH, GroupCommitWriter
from stores._sqlite_writer_process import WriterProcess

__all__ = ["WriterProcessMode"]

_log = structlog.get_logger("stores")

_PROCESS_START_TIMEOUT = 30.0  # seconds for the writer process to start and open the file


class WriterProcessMode:
    """The writer process's lifecycle, mixed into :class:`SQLiteStore` (a module of its own).

    The store owns the state; this class only declares what it uses.
    """

    _path: Path
    _busy_timeout: float
    _durability: Durability
    _cache_kib: int
    _writer_mode: str
    _state: str
    _tg: anyio.abc.TaskGroup | None
    _writer: GroupCommitWriter | None
    _process: WriterProcess | None
    _spawning: bool

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    def _want_process(self) -> None:
        """A large batch came (writer="auto"): start the writer process, once."""
        if self._spawning or self._state != "open" or self._tg is None:
            return
        self._spawning = True
        if getattr(sys, "frozen", False) or not sys.executable:
            # A frozen application's executable is the application, not a
            # Python that runs ``-c``: never start a copy of it.
            return
        self._tg.start_soon(self._start_process, False)

    async def _start_process(self, strict: bool) -> None:
        """Start the writer process and route batches to it (all, or the large ones).

        Raises:
            StoreUnavailable: it did not start and ``strict`` (writer="process").
        """
        process = WriterProcess(on_gone=self._process_gone)
        self._process = process
        try:
            # Shielded, with a deadline: never leak a half-started child.
            with anyio.CancelScope(shield=True), anyio.fail_after(_PROCESS_START_TIMEOUT):
                await process.start(
                    self._path, self._busy_timeout, self._durability.name, self._cache_kib
                )
        except Exception as exc:
            self._process = None
            with anyio.CancelScope(shield=True):
                await process.aclose(1.0)
            if strict:
                raise StoreUnavailable(f"cannot start the SQLite writer process: {exc}") from exc
            _log.warning(
                "SQLite writer process did not start; the writer thread goes on",
                path=str(self._path),
                error=repr(exc),
            )
            return
        if self._writer is not None:
            self._writer.use_process(process.run_batch, 0 if strict else LARGE_BATCH)

    def _process_gone(self, why: str) -> None:
        """The writer process died (not closed by us)."""
        if self._writer_mode == "auto" and self._writer is not None:
            self._writer.use_process(None)  # the thread takes everything again
            _log.warning(
                "SQLite writer process exited; the writer thread takes over",
                path=str(self._path),
                reason=why,
            )
        else:
            _log.error(
                "SQLite writer process exited; appends fail until the store is reopened",
                path=str(self._path),
                reason=why,
            )

    async def _close_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                await process.aclose(self._busy_timeout + 5.0)
