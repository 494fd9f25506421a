"""The group-commit writer of :class:`SQLiteStore`: one task, one thread, one connection.

Callers put encoded appends on a queue and await a plain asyncio future each
(an anyio stream costs ~5 us a message, DESIGN.md). Batches go to
:func:`write_batch` on a dedicated thread that owns the write connection: one
thread hop and one transaction per batch, however many appends it holds. The
first append queued while the pipeline is idle schedules one callback
(``call_soon``) that starts it, after the appends queued in the same
event-loop iteration have joined; from then on each batch's completion (ONE
``call_soon_threadsafe`` per batch) starts the next batch and resolves the
finished one's futures. The writer task only waits for :meth:`close` and
drains the queue then: no task wakes per batch. With a writer process
(``_sqlite_writer_process``, ``SQLiteStore(writer="auto"|"process")``) large
batches run the same :func:`write_batch` there instead, one batch in flight
either way, and complete through the same :meth:`GroupCommitWriter._done`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from operator import itemgetter

import anyio
import orjson

from stores._counters import BatchCounters
from stores._errors import ConcurrencyError, StoreClosed, StoreError, StoreUnavailable
from stores._sqlite_batch import BatchItem, BatchOutcome, StreamCache, write_batch
from stores._sqlite_outcomes import outcomes
from stores._sqlite_rows import from_micros, recorded_event
from stores._types import AppendResult, RecordedEvent, StoreStatistics

__all__ = ["GroupCommitWriter"]

# Queued appends at which an idle writer primes its two-batch pipeline, and the
# batch size from which writer="auto" sends batches to its writer process. The
# two go together: with a writer process, a crowd of 32 commits as two cohorts
# of 16 that take turns (one commits in the process while the event loop
# prepares the other's next appends); a cohort on the writer *thread* would
# take turns with the event loop for the GIL instead. Measured with the
# runtime's deposits (5 interleaved rounds, medians, on a 2-core machine where
# 1,000 callers gave ~19k commands/s): split at 64 and process from 64 gave
# 9,659 commands/s at 32 callers and 10,487 at 100; 32 and 16 gave 15,088 and
# 18,563, with 1, 16 and 1,000 callers unchanged. Appends alone at 100
# appenders: 15,817 -> 22,576 events/s. Below 16 the thread answers sooner (no
# pipe round trip). With no process (writer="thread", or "auto" before its
# process is up) the split stays at 64: there both cohorts commit on the one
# thread, one fsync after the other, and splitting 40-48 appenders in two cost
# 15-30% of their appends/s (three interleaved rounds).
_SPLIT_AT = 32
_SPLIT_AT_THREAD = 64
LARGE_BATCH = 16
"""Appends in a batch from which writer="auto" hands batches to its writer process."""

Waiter = asyncio.Future[AppendResult]
"""What a caller awaits for one append: an exact ``asyncio.Future``. A subclass
carrying the request would cost ~0.6 us more per append: its Python
``__init__``, and asyncio's Task takes its C fast path only for exact
futures (for others it looks up and calls ``add_done_callback`` and
``get_loop`` as Python attributes)."""

RunBatch = Callable[[list[BatchItem], Callable[["BatchOutcome | Exception"], None]], None]
"""``run_batch(items, done)``: commit ``items`` somewhere, then ``done(outcome)`` on
the loop with :func:`write_batch`'s answer, or the exception that failed the
whole batch."""


_events_of = itemgetter(1)
_is_done = asyncio.Future.done


class GroupCommitWriter:
    """Batches appends from any number of callers into single transactions."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        *,
        busy_timeout: float,
        max_batch_appends: int,
        max_batch_events: int,
        listeners: Sequence[object],
        announce: Callable[[Sequence[RecordedEvent]], None],
        on_large_batch: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._cache = StreamCache()  # the connection's, used on the writer thread only
        self._executor = executor
        # The writer process (SQLiteStore's writer="auto" or "process"): batches
        # of at least _elsewhere_min appends run there instead of on the
        # thread; see use_process(). Only one batch is ever in flight, so the
        # thread's and the process's connections never wait for each other.
        self._run_elsewhere: RunBatch | None = None
        self._elsewhere_min = 0
        # Called (on the loop) for each batch of LARGE_BATCH appends or more
        # that runs on the thread: writer="auto" starts its process then.
        self._on_large_batch = on_large_batch
        self._busy_timeout = busy_timeout
        self._max_appends = max(1, max_batch_appends)
        self._max_events = max(1, max_batch_events)
        self._listeners = listeners  # the store's live list: checked per batch
        self._announce = announce
        # The event loop the writer runs on: callers create their futures here.
        self.loop = asyncio.get_running_loop()
        # The queue: each append's future and its item, side by side (no
        # object per append to pair them).
        # Lists, not deques: a batch is taken with two slices (see _take_batch).
        self._waiters: list[Waiter] = []
        self._items: list[BatchItem] = []
        self._kicked = False  # a _kick is scheduled
        # _kick runs in the context the writer was made in (the store's open()),
        # as the writer task did, not in a copy of whichever caller's append
        # kicked it: a writer process it starts must not log with that
        # caller's bound structlog context (its address, its command id).
        self._context = contextvars.copy_context()
        self._close_requested = asyncio.Event()
        self._stopped = False  # run() is finishing: no batch may start any more
        self._inflight = False  # a batch is on the writer thread
        self._idle = asyncio.Event()  # set while no batch is on the thread
        self._idle.set()
        self._counters = BatchCounters()

    @property
    def queued(self) -> int:
        """Appends waiting for a batch."""
        return len(self._waiters)

    def submit(self, waiter: Waiter, item: BatchItem) -> None:
        """Queue an append; ``waiter`` resolves after its batch's COMMIT."""
        if self._stopped:
            waiter.set_exception(StoreClosed("the store's writer stopped"))
            return
        self._waiters.append(waiter)
        self._items.append(item)
        if not self._inflight and not self._kicked:
            # One callback per idle spell, not a task wake-up: it runs in the
            # next event-loop iteration, so what else is queued in this one
            # joins the batch. A batch in flight takes the queue in _done.
            self._kicked = True
            self.loop.call_soon(self._kick, context=self._context)

    def close(self) -> None:
        """Ask :meth:`run` to commit what is queued and return."""
        self._close_requested.set()

    def fail_pending(self, message: str) -> None:
        """Fail every queued append with StoreClosed (when the writer cannot run them)."""
        waiters = self._waiters
        self._waiters = []
        self._items = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(StoreClosed(message))

    def statistics(self) -> StoreStatistics:
        """An immutable snapshot of the writer's counters."""
        return self._counters.snapshot()

    async def run(self) -> None:
        """The writer task: wait for :meth:`close`, then commit what is queued and return.

        Batches start without it (:meth:`_kick`, :meth:`_done`); it is here
        for the end: draining the queue, and on cancellation waiting for
        the batch in flight and failing what never ran.
        """
        try:
            await self._close_requested.wait()
            while self._waiters or self._inflight:
                if not self._inflight:
                    self._kick()
                await self._idle.wait()
        finally:
            # A batch on the thread commits or fails as a whole (a cancelled
            # await would not stop the thread anyway), and its callers still
            # hear the outcome: wait for it, shielded.
            self._stopped = True
            with anyio.CancelScope(shield=True):
                await self._idle.wait()
            # Normally empty here. If the writer failed (a bug) or was
            # cancelled, no caller may wait forever for an answer.
            self.fail_pending("the store's writer stopped")

    def _take_batch(self, limit: int) -> tuple[list[Waiter], list[BatchItem]]:
        """Take the next batch off the queue, up to ``limit`` appends and the event cap."""
        waiters_q, items_q = self._waiters, self._items
        n = min(len(items_q), limit)
        # Under load, nearly always: no caller cancelled meanwhile and the
        # events fit, so the batch is two slices (no Python step per append).
        fits = sum(map(len, map(_events_of, islice(items_q, n)))) <= self._max_events
        if fits and not any(map(_is_done, islice(waiters_q, n))):
            waiters, items = waiters_q[:n], items_q[:n]
            del waiters_q[:n], items_q[:n]
            return waiters, items
        waiters = []
        items = []
        n_events = taken = 0
        cap = self._max_events
        for waiter, item in zip(waiters_q, items_q, strict=True):
            if not limit:
                break
            n = len(item[1])
            if n_events + n > cap and items:
                break
            taken += 1
            # A caller cancelled before its append reached a batch: drop it
            # (absent, never half-written).
            if not waiter.done():
                waiters.append(waiter)
                items.append(item)
                n_events += n
                limit -= 1
        del waiters_q[:taken], items_q[:taken]
        return waiters, items

    def use_process(self, run_batch: RunBatch | None, min_appends: int = 0) -> None:
        """Run batches of at least ``min_appends`` appends with ``run_batch`` (None: none)."""
        self._run_elsewhere = run_batch
        self._elsewhere_min = min_appends

    def _start(self, waiters: list[Waiter], items: list[BatchItem]) -> None:
        """Hand a batch to the writer thread (or process); :meth:`_done` gets its outcome."""
        run_elsewhere = self._run_elsewhere
        if run_elsewhere is not None and len(items) >= self._elsewhere_min:
            # Marked in flight first: a writer process that is gone answers at once.
            self._inflight = True
            self._idle.clear()
            run_elsewhere(items, functools.partial(self._done, waiters, items))
            return
        if self._on_large_batch is not None and len(items) >= LARGE_BATCH:
            self._on_large_batch()
        try:
            self._executor.submit(self._run_batch, waiters, items)
        except RuntimeError as exc:  # the executor was shut down: nothing will run
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreClosed(f"the store's writer stopped: {exc}"))
            return
        self._inflight = True
        self._idle.clear()

    def _run_batch(self, waiters: list[Waiter], items: list[BatchItem]) -> None:
        """On the writer thread: commit the batch, then hand the outcome to the loop."""
        outcome: BatchOutcome | Exception = StoreUnavailable("the SQLite writer thread stopped")
        try:
            outcome = write_batch(self._conn, items, self._busy_timeout, self._cache)
        except Exception as exc:
            outcome = exc
        except BaseException as exc:  # never seen on a worker thread; still answer
            outcome = StoreUnavailable(f"the SQLite writer thread stopped: {exc!r}")
            raise
        finally:
            # One thread-safe call per batch straight to _done: no executor
            # future to chain and no writer-task wake-up in between, so
            # callers resume one event-loop iteration sooner.
            self.loop.call_soon_threadsafe(self._done, waiters, items, outcome)

    def _done(
        self, waiters: list[Waiter], items: list[BatchItem], outcome: BatchOutcome | Exception
    ) -> None:
        """On the loop: start the next batch at once, then resolve this one.

        A two-stage pipeline: as soon as batch N is committed, batch N+1 (the
        appends that queued meanwhile) goes to the writer thread, and only
        then are N's callers resumed, so their next appends are encoded on
        the event loop while N+1 commits on the other core.
        """
        try:
            self._inflight = False
            self._start_next(split=False)
            if not self._inflight:
                # Idle: the next submit kicks (if the writer stopped, run()
                # fails what is still queued).
                self._idle.set()
        finally:
            self._finish(waiters, items, outcome)

    def _kick(self) -> None:
        """On the loop (scheduled by submit): start the idle pipeline."""
        self._kicked = False
        self._start_next(split=True)

    def _start_next(self, *, split: bool) -> None:
        """Start the next batch, unless one is in flight or the writer stopped.

        A batch the executor refuses fails (see :meth:`_start`) and the next
        one is tried, so this returns with a batch in flight or nothing
        queued. ``split``: the pipeline was idle, so a crowd that queued
        meanwhile is split in two: its second half commits while the first
        half's callers prepare their next appends.
        """
        while not self._inflight and self._waiters and not self._stopped:
            limit = self._max_appends
            queued = len(self._waiters)
            if split and queued >= (
                _SPLIT_AT if self._run_elsewhere is not None else _SPLIT_AT_THREAD
            ):
                limit = min(limit, (queued + 1) // 2)
            waiters, items = self._take_batch(limit)
            if items:
                self._start(waiters, items)

    def _finish(
        self, waiters: list[Waiter], items: list[BatchItem], outcome: BatchOutcome | Exception
    ) -> None:
        """Count, announce and resolve a batch the writer thread has finished."""
        if isinstance(outcome, Exception):
            # The whole batch rolled back: every caller still waiting gets its
            # own StoreUnavailable, chained to the driver's error.
            cause = outcome.__cause__ if isinstance(outcome, StoreUnavailable) else outcome
            for waiter in waiters:
                if not waiter.done():
                    err = StoreUnavailable(str(outcome))
                    err.__cause__ = cause
                    waiter.set_exception(err)
            return
        commit_us = outcome[0]
        results = outcomes(items, outcome)
        if commit_us is not None and self._listeners:  # build RecordedEvents only for someone
            self._announce(recorded_events(items, results, commit_us))
        # Count and resolve (this runs for every append under load).
        appends = events = 0
        for waiter, item, result in zip(waiters, items, results, strict=True):
            if type(result) is AppendResult:
                appends += 1
                events += len(item[1])
                if not waiter.done():
                    waiter.set_result(result)
            else:
                assert isinstance(result, StoreError)
                if isinstance(result, ConcurrencyError):
                    self._counters.conflicts += 1
                if not waiter.done():
                    waiter.set_exception(result)
        if commit_us is not None:
            self._counters.committed(appends, events)


def recorded_events(
    items: list[BatchItem], results: list[AppendResult | StoreError], at_us: int
) -> list[RecordedEvent]:
    """A committed batch's events as RecordedEvents, in position order."""
    loads = orjson.loads
    at = from_micros(at_us)
    empty = b"{}"  # most events carry no metadata: skip the decoder for them
    out: list[RecordedEvent] = []
    for (stream, events, *_), result in zip(items, results, strict=True):
        if type(result) is not AppendResult:
            continue
        version = result.version - len(events)
        for position, (type_, data, metadata, schema_version, event_id) in zip(
            result.positions, events, strict=True
        ):
            version += 1
            out.append(
                recorded_event(
                    position,
                    stream,
                    version,
                    type_,
                    loads(data),
                    loads(metadata) if metadata != empty else {},
                    schema_version,
                    event_id,
                    at,
                )
            )
    return out
