"""The PostgreSQL event store (asyncpg): several processes and hosts share one log.

Global order without skipped events
-----------------------------------
A sequence alone does not give readers a safe order: transaction A takes
position 100, B takes 101 and commits first, and a reader that saw 101 never
sees 100. This store instead serialises every write transaction of a schema
with a transaction-scoped advisory lock (``pg_advisory_xact_lock``), taken
before versions are checked and positions assigned (``max(position) + 1``):

* PostgreSQL holds an ``_xact`` advisory lock until the transaction ends
  (docs, "Advisory Locks") and releases it only after the commit is visible:
  ``CommitTransaction`` in ``xact.c`` calls ``ProcArrayEndTransaction`` first
  ("Let others know about no transaction in progress by me. Note that this
  must be done _before_ releasing locks we hold"). So the next writer, whose
  queries after the lock take fresh snapshots (see ``lock_and_read`` in
  ``_postgres_sql``), sees the previous batch, and positions are assigned
  and become visible strictly in order, densely (1, 2, 3, ...).
* A reader's snapshot therefore always holds a prefix of the log: it cannot
  see 101 without 100. No reader-side rule (gap timeouts, xmin tracking) is
  needed, so no reader can get it wrong.

The cost: write transactions on one schema run one at a time across every
process, including the commit's WAL flush. Group commit amortises it: one
writer task per store batches the appends of all its callers into one
transaction (four round trips per batch: BEGIN, lock-and-read, one INSERT
statement for events + streams + commands + NOTIFY, COMMIT), so the lock is
taken once per batch, not per append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import asyncpg
import structlog

from stores._base import EventStore
from stores._codec import (
    DEFAULT_MAX_EVENT_BYTES,
    check_append_args,
    check_text,
    encode_events,
    encode_value,
    validate_stream,
)
from stores._errors import StoreClosed, StoreUnavailable
from stores._gc import DEFAULT_GC_THRESHOLD, check_gc_threshold, hold_gc_threshold
from stores._postgres_batch import Pending, Plan
from stores._postgres_errors import DRIVER_ERRORS, RETRYABLE
from stores._postgres_listen import HeadWatcher
from stores._postgres_reads import PostgresReads
from stores._postgres_sql import Statements, migrate, quote_ident
from stores._postgres_state import PostgresStateCalls
from stores._postgres_writer import BatchWriter
from stores._types import (
    AppendResult,
    ExpectedVersion,
    NewEvent,
    StoreStatistics,
)

__all__ = ["PostgresStore"]

_log = structlog.get_logger("stores.postgres")


class PostgresStore(PostgresReads, PostgresStateCalls, EventStore):
    """An event store in a PostgreSQL schema, safe for writers in many processes.

    ``async with PostgresStore(dsn) as store:`` opens a connection pool
    (reads, snapshots, checkpoints, consumer transactions), creates (or
    migrates) the tables in ``schema``, and starts the group-commit writer,
    which has its own connection; a LISTEN connection starts on the first
    :meth:`wait_for_head`. The writer and listener run in a task group owned by the store, so no
    task outlives the block. Enter and exit the store in one task.

    Appends from concurrent callers share one transaction (group commit); see
    the module docstring for how global order is kept across processes.

    Connection loss: reads retry once on a fresh connection. An append is
    retried once only when the connection failed *before* COMMIT was sent (so
    it cannot have committed); if it fails during COMMIT its outcome is
    unknown and the append raises ``StoreUnavailable`` saying so (use a
    ``command_id`` and :meth:`find_command` to learn the outcome).

    After each commit the writer NOTIFYs the schema's channel with the new
    head, inside the transaction (PostgreSQL delivers a NOTIFY only when its
    transaction commits), which wakes :meth:`wait_for_head` in every process.

    Args:
        dsn: A libpq connection string, e.g. ``postgresql://postgres@127.0.0.1/test``.
        schema: The schema holding the tables (created if missing).
        max_event_bytes: The largest encoded event (data plus metadata) accepted.
        pool_min_size: Connections the pool keeps open.
        pool_max_size: Most connections the pool opens.
        statement_timeout: Server-side limit per statement, in seconds
            (``None``: no limit). It also bounds waiting for the write lock,
            and how long a write transaction may sit idle holding it
            (``idle_in_transaction_session_timeout``), so a frozen writer
            process cannot block the others for longer.
        max_batch_appends: Most appends in one group-commit transaction.
        max_batch_events: Most events in one transaction (a larger single
            append still goes alone).
        poll_interval: How often :meth:`wait_for_head` re-reads the head
            in case a notification was missed (seconds).
        gc_threshold: Process-wide: while the store is open, the cyclic GC's
            generation-0 threshold is at least this (as ``SQLiteStore``; see
            ``stores/_gc.py``). ``None`` never touches the GC.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        statement_timeout: float | None = 30.0,
        max_batch_appends: int = 1000,
        max_batch_events: int = 20_000,
        poll_interval: float = 1.0,
        gc_threshold: int | None = DEFAULT_GC_THRESHOLD,
    ) -> None:
        super().__init__()
        check_gc_threshold(gc_threshold)
        quote_ident(schema)  # validates
        for name, value in (
            ("max_event_bytes", max_event_bytes),
            ("pool_max_size", pool_max_size),
            ("max_batch_appends", max_batch_appends),
            ("max_batch_events", max_batch_events),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if type(pool_min_size) is not int or not 0 <= pool_min_size <= pool_max_size:
            raise ValueError(
                f"pool_min_size must be an int in 0..pool_max_size, not {pool_min_size!r}"
            )
        if statement_timeout is not None and not statement_timeout > 0:
            raise ValueError(f"statement_timeout must be > 0 or None, not {statement_timeout!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval!r}")
        self._dsn = dsn
        self._sql = Statements.for_schema(schema)
        self._max_event_bytes = max_event_bytes
        self._pool_min = pool_min_size
        self._pool_max = pool_max_size
        self._statement_timeout = statement_timeout
        self._max_batch = (max_batch_appends, max_batch_events)
        self._poll_interval = poll_interval
        self._gc_threshold = gc_threshold
        self._release_gc: Callable[[], None] | None = None
        self._state = "new"  # new -> open -> closing -> closed
        self._pool: asyncpg.Pool | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._writer: BatchWriter | None = None
        self._watcher: HeadWatcher | None = None

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._sql.schema

    # -- lifecycle ---------------------------------------------------------

    def _settings(self) -> dict[str, str]:
        # The schema in application_name lets an operator (or a test) find this
        # store's backends in pg_stat_activity; PostgreSQL truncates it to 63 bytes.
        settings = {"application_name": f"actorsourcing/{self.schema}"[:63]}
        if self._statement_timeout is not None:
            settings["statement_timeout"] = str(self._timeout_ms())
        return settings

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._dsn, server_settings=self._settings())

    def _timeout_ms(self) -> int:
        assert self._statement_timeout is not None
        return max(1, round(self._statement_timeout * 1000))

    async def open(self) -> None:
        """Open the pool, create or migrate the tables, start the writer.

        Raises:
            StoreUnavailable: the server cannot be reached, or the schema was
                written by a newer version of this library.
            StoreClosed: the store was already opened or closed.
        """
        if self._state != "new":
            raise StoreClosed("a PostgresStore can be opened once")
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._pool_min,
                max_size=self._pool_max,
                server_settings=self._settings(),
            )
            async with self._pool.acquire() as conn:
                await migrate(conn, self._sql)
        except DRIVER_ERRORS as exc:
            await self._close_pool()
            self._state = "closed"
            raise StoreUnavailable(f"cannot open the PostgreSQL store: {exc}") from exc
        except BaseException:
            await self._close_pool()
            self._state = "closed"
            raise
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._watcher = HeadWatcher(
            self._dsn, self._sql.channel, self._settings(), self._tg, self.head, self._poll_interval
        )
        idle_ms = 0 if self._statement_timeout is None else self._timeout_ms()
        self._writer = BatchWriter(
            self._connect, self._sql, self._max_batch, self._on_commit, self._call, idle_ms
        )
        self._tg.start_soon(self._writer.run)
        if self._gc_threshold is not None:
            self._release_gc = hold_gc_threshold(self._gc_threshold)
        self._state = "open"

    async def aclose(self) -> None:
        """Write pending appends, stop the writer and listener, close the pool. Idempotent."""
        if self._state in ("closing", "closed"):
            return
        was_open = self._state == "open"
        self._state = "closing"
        try:
            if was_open and self._tg is not None:
                assert self._writer is not None
                self._writer.close()
                if self._watcher is not None:
                    self._watcher.stop()
                await self._tg.__aexit__(None, None, None)
        finally:
            await self._close_pool()
            self._state = "closed"
            if self._release_gc is not None:
                self._release_gc()
                self._release_gc = None

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(10) as scope:
            try:
                await pool.close()
            except DRIVER_ERRORS:
                pool.terminate()
        if scope.cancelled_caught:
            pool.terminate()

    def _check_open(self) -> asyncpg.Pool:
        if self._state != "open" or self._pool is None:
            raise StoreClosed(
                "the PostgreSQL store is not open (use `async with PostgresStore(...)`)"
                if self._state == "new"
                else "the PostgreSQL store is closed"
            )
        return self._pool

    # -- the one boundary for reads ------------------------------------------

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        """Run ``pool.<method>(query, *args)``: retry once on a lost connection,
        translate driver errors to StoreUnavailable (chained)."""
        pool = self._check_open()
        for attempt in (1, 2):
            try:
                return await getattr(pool, method)(query, *args)
            except RETRYABLE as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"PostgreSQL connection failed: {exc}") from exc
                _log.warning("postgres connection lost; retrying once", error=repr(exc))
                # A lost connection usually means the server killed them all
                # (restart, failover, pg_terminate_backend): replace every
                # pooled connection on its next acquire, so the retry gets a
                # fresh one rather than another dead one.
                await pool.expire_connections()
            except DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"PostgreSQL failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing -----------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        *,
        command_id: str | None = None,
        reply: Any = None,
    ) -> AppendResult:
        """Append events to a stream atomically (see :meth:`EventStore.append`).

        The append joins the writer's queue and resolves after the batch
        holding it commits. A recorded command id raises DuplicateCommand
        before the version is checked. A caller cancelled before its batch
        starts writes nothing; cancelled later, its append may still commit
        (a ``command_id`` lets a retry find out).

        Raises:
            StoreUnavailable: the database failed (see the class docstring for
                when an append is retried).
        """
        if not events:
            self._check_open()
            validate_stream(stream)
            check_append_args(expected_version, command_id)
            row = await self._call("fetchrow", self._empty_append_sql(), stream)
            return AppendResult(stream, row[0], range(row[1] + 1, row[1] + 1))
        return await self.start_append(
            stream, events, expected_version, command_id=command_id, reply=reply
        )

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
        self._check_open()
        validate_stream(stream)
        check_append_args(expected_version, command_id)  # no NUL: PostgreSQL text cannot hold it
        if not events:
            return asyncio.ensure_future(
                self.append(stream, events, expected_version, command_id=command_id)
            )
        encoded = encode_events(events, self._max_event_bytes)
        for type_, _, _, _, event_id in encoded:
            check_text(type_, "event type")
            check_text(event_id, "event id")
        # Stored only with a command id (as on every backend); ignored without one.
        reply_bytes = (
            None if reply is None or command_id is None else encode_value(reply, "command reply")
        )
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        assert self._writer is not None
        self._writer.submit(
            Pending(stream, expected_version, encoded, command_id, reply_bytes, future)
        )
        return future

    def _empty_append_sql(self) -> str:
        return f"SELECT coalesce(({self._sql.stream_version}), 0), ({self._sql.head})"

    def _on_commit(self, plan: Plan) -> None:
        assert self._watcher is not None
        self._watcher.saw_head(plan.head)
        if self._commit_listeners:  # build RecordedEvents only for a listener
            self._announce(plan.recorded())

    # -- operations --------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        """The store's counters (this process's appends only)."""
        if self._writer is None:
            return StoreStatistics()
        return self._writer.statistics()
