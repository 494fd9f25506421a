"""The bare group-commit loop: deposits with no actor machinery, as a reference for ``write``.

The issue that set the ``write`` target measured one: "a bare group-commit
loop with per-account locks and no actor machinery" (~27,000 commands/s on
its machine, against a target of 30,000 for the runtime). This is that loop,
written the way a lean hand-rolled service would be, so the runtime's
commands/s can be read as a ratio within one run on any machine:

- each account is a ``[stream_id, version, balance]`` list in memory behind
  its own ``asyncio.Lock``; a deposit takes the lock, builds the event row
  the store would write (the same type name, ``orjson`` data, empty
  metadata, an id from the store's own id pool, a timestamp in
  microseconds), queues it with a future, awaits the commit, then updates
  the balance;
- one writer task takes every queued row into one ``BEGIN IMMEDIATE``
  transaction (one ``executemany``, one ``COMMIT``) on a worker thread, then
  resolves the futures;
- plain ``sqlite3`` on a copy of the store's schema with the store's writer
  pragmas (synchronous=FULL included), the same 10,000 accounts and the
  same callers (caller j deposits to accounts j, j+c, j+2c, ...), with
  Python's generation-0 GC threshold at the runtime's default.

The rows are the runtime's rows for the same deposits (with no command id
the runtime keeps no idempotency record and writes empty metadata too). The
loop validates nothing beyond the amount, checks no expected version (the
UNIQUE (stream_id, version) index would refuse a duplicate) and has no
actors, mailboxes, handlers, outcomes or statistics: what the runtime does
beyond this is what its ratio to this loop prices.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench._measure import LatencyRecorder
from bench.workloads import _rawsqlite
from stores._codec import new_event_id

__all__ = ["BareResult", "bare_deposits"]

_INSERT = (
    "INSERT INTO events (stream_id, version, type, data, metadata, schema_version, "
    "event_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class BareResult:
    """One level of the bare loop: wall seconds, latencies, and how it batched."""

    elapsed: float
    latencies: LatencyRecorder
    commits: int


class _Loop:
    """The accounts, the queue of rows awaiting a commit, and the writer task."""

    def __init__(self, conn: sqlite3.Connection, pool: ThreadPoolExecutor, accounts: int) -> None:
        self.conn = conn
        self.pool = pool
        self.accounts = [[sid, 0, 0] for sid in range(1, accounts + 1)]
        self.locks = [asyncio.Lock() for _ in range(accounts)]
        self.queue: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.commits = 0
        self.failed: BaseException | None = None  # set once the writer has failed
        self.stopping = False

    def _commit(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def writer(self) -> None:
        """Commit every queued row in one transaction, then resolve their futures; repeat.

        Raises:
            BaseException: a commit failed (or the task was cancelled). Every
                deposit waiting then, and every later one, fails with a
                RuntimeError chained to it (a cancelled commit may still land).
        """
        loop = asyncio.get_running_loop()
        batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self.stopping = False
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                batch, self.queue = self.queue, []
                if not batch and self.stopping:
                    return
                if batch:
                    rows = [row for row, _ in batch]
                    await loop.run_in_executor(self.pool, self._commit, rows)
                    self.commits += 1
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
                    batch = []
        except BaseException as exc:
            self.failed = exc
            for _, fut in [*batch, *self.queue]:
                if not fut.done():
                    fut.set_exception(self._failure())
            self.queue = []
            raise

    def stop(self) -> None:
        """Let :meth:`writer` return once it has committed what is queued."""
        self.stopping = True
        self.wake.set()

    def _failure(self) -> RuntimeError:
        error = RuntimeError(f"the bare loop's writer stopped: {self.failed!r}")
        error.__cause__ = self.failed
        return error

    async def deposit(self, index: int, amount: int) -> None:
        if amount <= 0:
            raise ValueError("a deposit must be positive")
        async with self.locks[index]:
            if self.failed is not None:
                raise self._failure()
            account = self.accounts[index]
            version = account[1] + 1
            row = (
                account[0],
                version,
                "Account.Deposited",
                orjson.dumps({"amount": amount}),
                b"{}",
                1,
                new_event_id(),
                time.time_ns() // 1000,
            )
            fut = asyncio.get_running_loop().create_future()
            self.queue.append((row, fut))
            self.wake.set()
            await fut
            account[1] = version
            account[2] += amount


async def bare_deposits(
    source: Path,
    target: Path,
    pragmas: dict[str, Any],
    accounts: int,
    levels: list[tuple[int, int]],
    amount: int,
    gc_threshold: int | None,
) -> dict[int, BareResult]:
    """Run each ``(concurrency, total)`` level of deposits through the bare loop.

    Args:
        source: The store's file: its schema is copied into ``target``.
        target: A new file for the loop's rows.
        pragmas: The store's writer connection's (:func:`_rawsqlite.store_pragmas`).
        accounts: Accounts ``Account-bench-0`` ... (streams created untimed).
        levels: ``(concurrency, deposits)`` pairs, run in order.
        amount: Each deposit's amount.
        gc_threshold: The GC's generation-0 threshold while it runs (None: as is).

    Returns:
        Each level's result, by concurrency.

    Raises:
        RuntimeError: a commit failed, or the stored rows or balances do not
            add up afterwards.
    """
    out: dict[int, BareResult] = {}
    conn = _rawsqlite.copy_schema(source, target, pragmas, any_thread=True)
    held = gc.get_threshold()
    try:
        conn.execute("BEGIN")  # one transaction: each row alone would be an fsync'd commit
        conn.executemany(
            "INSERT INTO streams (id, name, category) VALUES (?, ?, 'Account')",
            [(sid, f"Account-bench-{sid - 1}") for sid in range(1, accounts + 1)],
        )
        conn.execute("COMMIT")
        if gc_threshold is not None:
            gc.set_threshold(gc_threshold, *held[1:])
        with ThreadPoolExecutor(1, thread_name_prefix="bare-writer") as pool:
            state = _Loop(conn, pool, accounts)
            for concurrency, total in levels:
                out[concurrency] = await _level(state, concurrency, total, amount)
        balance = sum(a[2] for a in state.accounts)
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        gc.set_threshold(*held)
        conn.close()
    expected = sum(total for _c, total in levels)
    if balance != amount * expected or stored != expected:
        raise RuntimeError(
            f"bare loop: {stored} events and a total balance of {balance}, "
            f"expected {expected} and {amount * expected}"
        )
    return out


async def _level(state: _Loop, concurrency: int, total: int, amount: int) -> BareResult:
    latencies = LatencyRecorder()
    n_accounts = len(state.accounts)
    commits_before = state.commits

    async def caller(j: int, count: int) -> None:
        clock = time.perf_counter
        record = latencies.values.append
        deposit = state.deposit
        for i in range(count):
            t0 = clock()
            await deposit((j + i * concurrency) % n_accounts, amount)
            record(clock() - t0)

    counts = [total // concurrency + (j < total % concurrency) for j in range(concurrency)]
    t0 = time.perf_counter()
    # One task group per level: a failing commit fails every caller, and no
    # task (the writer included) outlives the level.
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(state.writer())
            async with asyncio.TaskGroup() as callers:
                for j, n in enumerate(counts):
                    if n:
                        callers.create_task(caller(j, n))
            elapsed = time.perf_counter() - t0
            state.stop()
    except ExceptionGroup as group:
        raise RuntimeError(f"the bare loop failed: {state.failed or group!r}") from (
            state.failed or group
        )
    return BareResult(elapsed, latencies, state.commits - commits_before)
