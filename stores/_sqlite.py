"""SQLiteStore: the embedded default event store (aiosqlite + a group-commit writer)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.abc

from stores._base import EventStore
from stores._codec import (
    DEFAULT_MAX_EVENT_BYTES,
    check_append_args,
    check_unicode,
    encode_events,
    encode_value,
    validate_stream,
)
from stores._errors import StoreClosed, StoreUnavailable
from stores._gc import DEFAULT_GC_THRESHOLD, check_gc_threshold, hold_gc_threshold
from stores._sqlite_batch import ANY_VERSION
from stores._sqlite_consumer import SQLiteConsumers
from stores._sqlite_process_mode import WriterProcessMode
from stores._sqlite_reads import VERSION_OF, SQLiteReads
from stores._sqlite_schema import Durability, configure, connect_sync, migrate
from stores._sqlite_writer import GroupCommitWriter
from stores._sqlite_writer_calls import SQLiteWriterCalls
from stores._sqlite_writer_process import WriterProcess
from stores._types import (
    ANY,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    StoreStatistics,
)

__all__ = ["Durability", "SQLiteStore"]

# Constructed directly, not through loop.create_future() (a Python method):
# each append's future (see _sqlite_writer.Waiter).
_Future = asyncio.Future

_EMPTY_APPEND = f"SELECT {VERSION_OF}, coalesce((SELECT max(position) FROM events), 0)"


class SQLiteStore(SQLiteReads, SQLiteConsumers, SQLiteWriterCalls, WriterProcessMode, EventStore):
    """The embedded default event store: one SQLite file in WAL mode.

    Appends from any number of concurrent callers are group-committed by one
    writer task: each batch is ONE ``BEGIN IMMEDIATE`` transaction with a
    few statements (their number does not grow with the number of appends),
    and each append resolves only after its
    COMMIT. An append that conflicts (``ConcurrencyError``) or repeats a
    command id (``DuplicateCommand``) fails alone; the rest of its batch
    commits. Reads use their own connections and never wait behind the writer.
    Several processes may share the file (``busy_timeout``); versions are read
    inside the write transaction, so cross-process races surface as
    ``ConcurrencyError``. Use it as ``async with SQLiteStore(path) as store:``
    (``open`` and ``aclose`` enter and exit the writer's task group, so they
    must run in the same task).

    Args:
        path: The database file (created with its schema when missing).
        durability: ``Durability.FULL`` (default: survives power loss) or
            ``Durability.NORMAL`` (survives a process crash; faster).
        max_event_bytes: Largest encoded event (data + metadata) accepted.
        busy_timeout: Seconds to wait for another connection's lock before
            failing with ``StoreUnavailable``.
        readers: Number of read connections.
        max_batch_appends: Most appends committed in one transaction.
        max_batch_events: Most events committed in one transaction (a single
            larger append still commits alone).
        cache_kib: SQLite page cache of the write connection, in KiB (each
            read connection gets a quarter of it).
        writer: Where batches are written. ``"thread"``: on a thread of
            this process. ``"process"``: by a child process of its own
            (POSIX), which runs in parallel with the event loop instead of
            taking turns with it for the GIL (see ``_sqlite_writer_process``):
            more appends/s under many concurrent appenders, a pipe round
            trip more per batch. ``"auto"`` (default on POSIX): the thread,
            plus a writer process started the first time a batch of 16
            appends or more comes (concurrent load), which then takes such
            batches while small ones stay on the thread. If the process
            dies, the batch it was writing fails with ``StoreUnavailable``
            (its outcome is unknown), the thread takes every batch, and a
            new process follows after a back-off (1 s, doubling up to 60 s
            while they keep dying or failing to start): ``"process"``
            starts it then, ``"auto"`` at the first large batch after it.
        gc_threshold: Process-wide: while the store is open, the cyclic GC's
            generation-0 threshold is at least this (Python's default: 700),
            so appends in flight die young instead of being promoted and
            walked by full collections; restored when the last store or
            runtime holding it closes (see ``stores/_gc.py``). ``None``
            never touches the GC.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = Durability.FULL,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        busy_timeout: float = 5.0,
        readers: int = 2,
        max_batch_appends: int = 2000,
        max_batch_events: int = 20_000,
        cache_kib: int = 65536,
        writer: str = "auto",
        gc_threshold: int | None = DEFAULT_GC_THRESHOLD,
    ) -> None:
        super().__init__()
        check_gc_threshold(gc_threshold)
        if writer not in ("auto", "thread", "process"):
            raise ValueError(f"writer must be 'auto', 'thread' or 'process', not {writer!r}")
        if sys.platform == "win32":  # no pipes on the proactor event loop's add_reader
            if writer == "process":
                raise ValueError("writer='process' needs a POSIX system")
            writer = "thread"
        if not isinstance(durability, Durability):
            raise TypeError(f"durability must be a Durability, not {durability!r}")
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be a positive int, not {max_event_bytes!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        self._path = Path(path)
        self._durability = durability
        self._max_event_bytes = max_event_bytes
        self._busy_timeout = busy_timeout
        self._n_readers = max(1, readers)
        self._max_batch_appends = max_batch_appends
        self._max_batch_events = max_batch_events
        self._cache_kib = cache_kib
        self._writer_mode = writer
        self._gc_threshold = gc_threshold
        self._process: WriterProcess | None = None
        self._spawning = False  # writer="auto": a writer process was asked for
        self._deaths = 0  # writer processes that died (or failed to start) in a row
        self._restart_at = 0.0  # no replacement before this time.monotonic()
        self._started_at = 0.0  # when the running writer process started
        self._restart_scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._writer: GroupCommitWriter | None = None
        self._state = "new"  # new -> open -> closing -> closed
        self._stack: AsyncExitStack | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._reader_turn = 0
        self._idle_consumers: list[aiosqlite.Connection] = []
        self._consumers: set[aiosqlite.Connection] = set()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the schema, open connections and start the writer task.

        Raises:
            StoreUnavailable: the file cannot be opened, or its schema is newer
                than this code supports.
        """
        if self._state != "new":
            raise StoreClosed("an SQLiteStore can be opened only once")
        self._state = "open"
        stack = AsyncExitStack()
        try:
            if self._gc_threshold is not None:
                stack.callback(hold_gc_threshold(self._gc_threshold))  # released last
            stack.push_async_callback(self._close_connections)
            # One dedicated thread owns the writer connection for its lifetime.
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            loop = asyncio.get_running_loop()
            with anyio.CancelScope(shield=True):  # never leak a half-opened connection
                writer_conn = await loop.run_in_executor(self._executor, self._open_writer)
            self._writer_conn = writer_conn
            for _ in range(self._n_readers):
                self._readers.append(await self._connect())
            # Closed after the writer task has drained (the stack unwinds LIFO).
            stack.push_async_callback(self._close_process)
            self._writer = GroupCommitWriter(
                writer_conn,
                self._executor,
                busy_timeout=self._busy_timeout,
                max_batch_appends=self._max_batch_appends,
                max_batch_events=self._max_batch_events,
                listeners=self._commit_listeners,
                announce=self._announce,
                on_large_batch=self._want_process if self._writer_mode == "auto" else None,
            )
            self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(self._writer.run)
            if self._writer_mode == "process":
                await self._start_process(strict=True)
        except BaseException as exc:
            self._state = "closed"
            # The writer task (if it started) must finish for its task group to exit.
            self._cancel_restart()
            if self._writer is not None:
                self._writer.close()
            await stack.aclose()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open SQLite store {self._path}: {exc}") from exc
            raise
        self._stack = stack

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect_sync(self._path, self._busy_timeout)
        try:
            configure(conn, self._durability, self._cache_kib)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA synchronous={self._durability.value}")
            await conn.execute(f"PRAGMA cache_size=-{self._cache_kib // 4}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Commit every pending append, stop the writer and close all connections."""
        if self._state in ("closing", "closed", "new"):
            self._state = "closed" if self._state == "new" else self._state
            return
        self._state = "closing"
        self._cancel_restart()
        if self._writer is not None:
            self._writer.close()
        try:
            # Not shielded here: the task group must exit in the cancel scope
            # it was entered in. Its exit waits for the writer to drain the
            # queue; a batch in flight is shielded inside the writer.
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self._state = "closed"
            if self._writer is not None:  # leftovers only when aclose was cancelled
                self._writer.fail_pending("the store closed before this append")

    async def _close_connections(self) -> None:
        # Shielded: closing always releases the connections and their threads.
        with anyio.CancelScope(shield=True):
            conns = [*self._readers, *self._idle_consumers, *self._consumers]
            self._readers.clear()
            self._idle_consumers.clear()
            self._consumers.clear()
            for conn in conns:
                await conn.close()
            executor, self._executor = self._executor, None
            if executor is not None:
                writer, self._writer_conn = self._writer_conn, None
                if writer is not None:
                    await asyncio.get_running_loop().run_in_executor(executor, writer.close)
                executor.shutdown(wait=False)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosed(f"the SQLite store {self._path} is {self._state}")

    # -- writing ------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        """Append events atomically through the group-commit writer (see EventStore)."""
        if not events:
            if self._state != "open":
                self._check_open()
            validate_stream(stream)
            check_append_args(expected_version, command_id)
            rows = await self._fetch(_EMPTY_APPEND, (stream,))
            version, head = rows[0]
            return AppendResult(stream, version, range(head + 1, head + 1))
        # Cancelling this await cancels only the request (a future): the writer
        # still commits (or drops, if it had not taken it yet) the whole append.
        return await self._start_append(stream, events, expected_version, command_id, reply)

    def start_append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> asyncio.Future[AppendResult]:
        """Validate, encode and queue an append; the future resolves after its COMMIT.

        See :meth:`EventStore.start_append`: bad input and a closed store
        raise here, with nothing queued.
        """
        return self._start_append(stream, events, expected_version, command_id, reply)

    def _start_append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        command_id: str | None,
        reply: Any,
    ) -> asyncio.Future[AppendResult]:
        # start_append with positional arguments (keyword passing costs on the hot path).
        if self._state != "open":
            self._check_open()
        validate_stream(stream)
        check_append_args(expected_version, command_id)
        if not events:
            return asyncio.ensure_future(
                self.append(stream, events, expected_version, command_id=command_id)
            )
        expected = ANY_VERSION if expected_version is ANY else expected_version
        # Encoded here, in the caller: bad input fails alone, nothing queued.
        encoded = encode_events(events, self._max_event_bytes)
        for type_, _, _, _, event_id in encoded:
            # str.isascii() is O(1) (CPython caches it): most names skip the check.
            if not type_.isascii():
                check_unicode(type_, "event type")
            if not event_id.isascii():
                check_unicode(event_id, "event id")
        reply_bytes = encode_value(reply, "command reply") if command_id is not None else b"null"
        writer = self._writer
        assert writer is not None
        waiter: asyncio.Future[AppendResult] = _Future(loop=writer.loop)
        writer.submit(waiter, (stream, encoded, expected, command_id, reply_bytes))
        return waiter

    def statistics(self) -> StoreStatistics:
        """An immutable snapshot of the writer's counters (zeros before open)."""
        return self._writer.statistics() if self._writer is not None else StoreStatistics()
