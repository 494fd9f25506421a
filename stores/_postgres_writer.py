"""The group-commit writer of :class:`stores.PostgresStore`.

One long-lived task drains a deque of pending appends. Each batch is one
transaction of four round trips, whatever its size: BEGIN; ``lock_and_read``
(takes the schema's write lock, then reads the head, the batch's stream
versions and recorded command ids); one INSERT statement for events, stream
versions, command records and the NOTIFY; COMMIT. Versions are checked in
Python between the two (:func:`~stores._postgres_batch.plan_batch`), so a
conflicting append fails alone and the others commit.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
import asyncpg
import structlog

from stores._counters import BatchCounters
from stores._errors import (
    ConcurrencyError,
    DuplicateCommand,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from stores._postgres_batch import Pending, Plan, command_from_row, plan_batch
from stores._postgres_errors import DRIVER_ERRORS, RETRYABLE
from stores._postgres_sql import Statements
from stores._types import ANY, CommandRecord, StoreStatistics

__all__ = ["BatchWriter"]

_log = structlog.get_logger("stores.postgres")


_STOPPED = "the PostgreSQL store's writer stopped"


class BatchWriter:
    """Batches appends into transactions; :meth:`run` is the writer task.

    The writer has its own connection, outside the pool, so appends never
    wait behind readers or long consumer transactions holding every pooled
    connection (which could deadlock a consumer that appends). It is dropped
    after any error and reopened for the next batch.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        sql: Statements,
        max_batch: tuple[int, int],
        on_commit: Callable[[Plan], None],
        read: Callable[..., Awaitable[Any]],
        idle_timeout_ms: int,
    ) -> None:
        self._idle_timeout_ms = idle_timeout_ms
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._sql = sql
        self._max_appends, self._max_events = max_batch
        self._on_commit = on_commit
        self._read = read  # the store's read boundary (retry + translation)
        self._queue: collections.deque[Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._stopped = False  # run() has returned: appends fail at once
        # Test hook: awaited after the batch is written, before COMMIT.
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        self._counters = BatchCounters()

    def submit(self, pending: Pending) -> None:
        """Queue an append; its future resolves after its batch's outcome is known."""
        if self._stopped:
            pending.future.set_exception(StoreClosed(_STOPPED))
            return
        self._queue.append(pending)
        self._wakeup.set()

    def close(self) -> None:
        """Ask :meth:`run` to write what is queued and return."""
        self._closing = True
        self._wakeup.set()

    async def run(self) -> None:
        """Drain the queue, one transaction per batch, until :meth:`close`."""
        try:
            await self._drain()
        finally:
            # Normally empty here; if the writer was cancelled (its task group
            # failed), no caller may wait forever for an answer.
            self._stopped = True
            while self._queue:
                pending = self._queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(StoreClosed(_STOPPED))
            conn, self._conn = self._conn, None
            if conn is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5) as scope:
                    try:
                        await conn.close()
                    except DRIVER_ERRORS:
                        conn.terminate()
                if scope.cancelled_caught:
                    conn.terminate()

    def _drop(self) -> None:
        # After an error the connection's state is unknown: never reuse it.
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[Pending] = []
            events = 0
            while self._queue and len(batch) < self._max_appends:
                p = self._queue[0]
                if batch and events + len(p.events) > self._max_events:
                    break
                self._queue.popleft()
                if not p.future.done():  # its caller was cancelled before we began
                    batch.append(p)
                    events += len(p.events)
            if batch:
                # Shielded: a started batch runs to a known outcome (bounded by
                # statement_timeout) and every caller hears it.
                with anyio.CancelScope(shield=True):
                    await self._write(batch)

    async def _write(self, batch: list[Pending]) -> None:
        for attempt in (1, 2):
            commit_sent = False
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                conn = self._conn
                # READ COMMITTED whatever the server's default: the statements
                # after the advisory lock must see what the previous holder
                # committed (a REPEATABLE READ snapshot would be older than it).
                tr = conn.transaction(isolation="read_committed")
                await tr.start()
                try:
                    plan = await self._run(conn, batch)
                except BaseException:
                    with anyio.CancelScope(shield=True), suppress(*DRIVER_ERRORS):
                        await tr.rollback()
                    raise
                commit_sent = True
                await tr.commit()
            except asyncpg.UniqueViolationError as exc:
                # The server rolled back; the connection is fine.
                # Only a writer outside this lock protocol (a manual INSERT, an
                # old client) gets here: versions and command ids were checked
                # under the lock. Write the appends one by one so the culprit
                # fails alone, with the contract's error.
                if len(batch) > 1:
                    for p in batch:
                        await self._write([p])
                else:
                    await self._reject(batch[0], exc)
                return
            except RETRYABLE as exc:
                self._drop()
                if attempt == 1 and not commit_sent:
                    # The connection died before COMMIT was sent, so nothing
                    # committed: retrying on a fresh connection is safe.
                    _log.warning("postgres connection lost; retrying the batch", error=repr(exc))
                    continue
                self._fail(batch, exc, commit_sent)
                return
            except DRIVER_ERRORS as exc:
                self._drop()
                self._fail(batch, exc, commit_sent)
                return
            except Exception as exc:  # a bug: fail the callers, keep the writer alive
                _log.exception("postgres writer failed")
                self._drop()
                self._fail(batch, exc, commit_sent)
                return
            self._finish(plan)
            return

    async def _run(self, conn: asyncpg.Connection, batch: list[Pending]) -> Plan:
        sql = self._sql
        streams = list({p.stream for p in batch})
        cmd_ids = [p.command_id for p in batch if p.command_id is not None]
        rows = await conn.fetch(
            sql.lock_and_read, sql.lock_key, streams, cmd_ids, self._idle_timeout_ms
        )
        head, at = 0, None
        versions: dict[str, int] = {}
        commands: dict[str, CommandRecord] = {}
        for kind, key, stream, version, first, last, reply, ts in rows:
            if kind == 0:
                head, at = version, ts
            elif kind == 1:
                versions[key] = version
            else:
                commands[key] = command_from_row((key, stream, version, first, last, reply))
        assert at is not None
        plan = plan_batch(batch, head, versions, commands, at)
        if plan.accepted:
            await conn.execute(
                sql.write_batch,
                *plan.columns(), sql.channel, at,
                plan.final_streams, plan.final_versions, plan.cmd_ids, plan.cmd_streams,
                plan.cmd_versions, plan.cmd_first, plan.cmd_last, plan.cmd_replies,
                str(plan.head),
            )  # fmt: skip
            if self.before_commit is not None:
                await self.before_commit()
        return plan

    async def _reject(self, p: Pending, exc: asyncpg.UniqueViolationError) -> None:
        """Fail one append that hit a unique violation with the contract's error."""
        error: Exception
        try:
            if p.command_id is not None and exc.constraint_name == "commands_pkey":
                row = await self._read("fetchrow", self._sql.find_command, p.command_id)
                record = None if row is None else command_from_row(row)
                error = DuplicateCommand(p.command_id, record)
            elif exc.constraint_name == "events_pkey":
                # Two writers took one position: one of them is not using the
                # write lock. Not the caller's conflict; nothing was written.
                error = StoreUnavailable(
                    f"position collision: a writer outside this store's lock protocol: {exc}"
                )
            else:  # events (stream, version) or streams: a version conflict
                actual = await self._read("fetchval", self._sql.actual_version, p.stream)
                expected = -1 if p.expected is ANY else p.expected
                error = ConcurrencyError(p.stream, expected, int(actual))
                self._counters.conflicts += 1
            error.__cause__ = exc
        except StoreError as failure:  # the lookup failed (unavailable, or the store closing)
            error = failure
        if not p.future.done():
            p.future.set_exception(error)

    def _fail(self, batch: list[Pending], exc: BaseException, commit_sent: bool) -> None:
        # An error the server reports for COMMIT means it rolled back; a lost
        # connection during COMMIT leaves the outcome unknown.
        if commit_sent and not (
            isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, RETRYABLE)
        ):
            message = f"PostgreSQL failed during COMMIT; the append's outcome is unknown: {exc}"
        else:
            message = f"PostgreSQL failed; nothing was written: {exc}"
        for p in batch:
            if not p.future.done():
                error = StoreUnavailable(message)
                error.__cause__ = exc
                p.future.set_exception(error)

    def _finish(self, plan: Plan) -> None:
        for p in plan.rejected:
            if isinstance(p.error, ConcurrencyError):
                self._counters.conflicts += 1
            if not p.future.done():
                assert p.error is not None
                p.future.set_exception(p.error)
        if not plan.accepted:
            return
        self._counters.committed(len(plan.accepted), len(plan.rows))
        for p in plan.accepted:
            if not p.future.done():
                assert p.result is not None
                p.future.set_result(p.result)
        self._on_commit(plan)

    def statistics(self) -> StoreStatistics:
        """The writer's counters."""
        return self._counters.snapshot()
