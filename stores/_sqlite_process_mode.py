"""When :class:`SQLiteStore` runs a writer process (``writer="auto"`` or ``"process"``).

The process itself (spawning it, the pipe protocol) is
``_sqlite_writer_process``; this mixin decides when there is one: at open
with ``writer="process"``, at the first large batch with ``writer="auto"``.
When it dies, the writer thread takes every batch at once (the batch the
process had fails: its outcome is unknown), and a new process comes after a
back-off (1 s, doubling up to 60 s while they keep dying): ``process``
starts it then, ``auto`` at the first large batch after it.
"""

from __future__ import annotations

import sys
import time
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
RESTART_FIRST = 1.0
"""Seconds from a writer process's death to its replacement; doubled per death in a row."""
RESTART_MAX = 60.0
"""The longest wait before a replacement."""
_STEADY = 60.0  # a process that lived this long resets the back-off


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
    # Set by the store's __init__: deaths in a row, when a replacement may
    # start (time.monotonic()), when the running process started, and the
    # scope of a pending replacement (cancelled when the store closes).
    _deaths: int
    _restart_at: float
    _started_at: float
    _restart_scope: anyio.CancelScope | None

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    def _want_process(self) -> None:
        """A large batch came (writer="auto"): start the writer process, unless it
        runs, is starting, or died less than its back-off ago."""
        if self._spawning or self._state != "open" or self._tg is None:
            return
        if time.monotonic() < self._restart_at:
            return
        self._spawning = True
        if getattr(sys, "frozen", False) or not sys.executable:
            # A frozen application's executable is the application, not a
            # Python that runs ``-c``: never start a copy of it.
            return
        self._tg.start_soon(self._start_auto)

    async def _start_auto(self) -> None:
        if not await self._start_process(strict=False):
            self._next_delay()  # try again at a large batch after the back-off
            self._spawning = False

    async def _start_process(self, strict: bool) -> bool:
        """Start the writer process and route batches to it (all, or the large ones).

        Returns:
            Whether it started.

        Raises:
            StoreUnavailable: it did not start and ``strict`` (writer="process", at open).
        """
        process = WriterProcess(on_gone=self._process_gone)
        self._process = process
        try:
            # Shielded, with a deadline: never leak a half-started child.
            with anyio.CancelScope(shield=True), anyio.fail_after(_PROCESS_START_TIMEOUT):
                await process.start(
                    self._path, self._busy_timeout, self._durability.name, self._cache_kib
                )
            if not process.usable:  # it died right after coming up
                raise StoreUnavailable("the writer process exited as it started")
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
            return False
        self._started_at = time.monotonic()
        if self._writer is not None:
            every = self._writer_mode == "process"
            self._writer.use_process(process.run_batch, 0 if every else LARGE_BATCH)
        return True

    def _process_gone(self, why: str) -> None:
        """The writer process died (not closed by us): the thread takes over, and a
        replacement follows after the back-off."""
        if self._process is None or not self._process.started:
            return  # it died while starting: _start_process reports that (and its caller retries)
        if self._writer is not None:
            self._writer.use_process(None)  # the thread takes everything again
        dead, self._process = self._process, None
        if dead is not None and self._tg is not None:
            self._tg.start_soon(self._reap, dead)
        if time.monotonic() - self._started_at >= _STEADY:
            self._deaths = 0  # it had been running fine: start the back-off afresh
        delay = self._next_delay()
        _log.warning(
            "SQLite writer process exited; the writer thread takes over",
            path=str(self._path),
            reason=why,
            restart_in=delay,
        )
        if self._writer_mode == "auto":
            self._spawning = False  # the first large batch after the back-off starts one
        elif self._state == "open" and self._tg is not None:
            self._tg.start_soon(self._restart_later, delay)

    async def _reap(self, dead: WriterProcess) -> None:
        """Close a dead process's pipes and collect its exit status (no zombie left)."""
        with anyio.CancelScope(shield=True):
            await dead.aclose(self._busy_timeout + 5.0)

    def _next_delay(self) -> float:
        """Count one more death (or failed start) in a row; the back-off before the next try."""
        self._deaths += 1
        delay: float = min(RESTART_MAX, RESTART_FIRST * 2.0 ** (self._deaths - 1))
        self._restart_at = time.monotonic() + delay
        return delay

    async def _restart_later(self, delay: float) -> None:
        """writer="process": start a replacement after ``delay``, again until one starts."""
        with anyio.CancelScope() as scope:
            self._restart_scope = scope
            try:
                while self._state == "open":
                    await anyio.sleep(delay)
                    if self._state != "open" or await self._start_process(strict=False):
                        return
                    delay = self._next_delay()
            finally:
                self._restart_scope = None

    def _cancel_restart(self) -> None:
        """The store is closing: a pending replacement is not started."""
        if self._restart_scope is not None:
            self._restart_scope.cancel()

    async def _close_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                await process.aclose(self._busy_timeout + 5.0)
