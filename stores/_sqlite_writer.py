"""The group-commit writer of :class:`SQLiteStore`: one task, one thread, one connection.

Callers put encoded appends on a deque and await a plain asyncio future (an
anyio stream costs ~5 us a message, DESIGN.md). One long-lived task takes
everything queued into a batch and hands it to :func:`write_batch` on a
dedicated thread that owns the write connection: one thread hop and one
transaction per batch, however many appends it holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import anyio
import orjson

from stores._errors import ConcurrencyError, StoreClosed, StoreUnavailable
from stores._sqlite_batch import AppendRequest, write_batch
from stores._sqlite_rows import from_micros
from stores._types import AppendResult, RecordedEvent, StoreStatistics

__all__ = ["GroupCommitWriter"]

_SPLIT_AT = 64  # queued appends at which an idle writer primes its pipeline


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
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._busy_timeout = busy_timeout
        self._max_appends = max(1, max_batch_appends)
        self._max_events = max(1, max_batch_events)
        self._listeners = listeners  # the store's live list: checked per batch
        self._announce = announce
        self._pending: deque[AppendRequest] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._appends = self._events = self._batches = self._conflicts = self._max_batch = 0
        self._batch_sizes: dict[int, int] = {}

    @property
    def queued(self) -> int:
        """Appends waiting for a batch."""
        return len(self._pending)

    def submit(self, request: AppendRequest) -> None:
        """Queue an append; its future resolves after its batch's COMMIT."""
        self._pending.append(request)
        self._wake.set()

    def close(self) -> None:
        """Ask :meth:`run` to commit what is queued and return."""
        self._closing = True
        self._wake.set()

    def fail_pending(self, message: str) -> None:
        """Fail every queued append with StoreClosed (when the writer cannot run them)."""
        while self._pending:
            req = self._pending.popleft()
            if not req.future.done():
                req.future.set_exception(StoreClosed(message))

    def statistics(self) -> StoreStatistics:
        """An immutable snapshot of the writer's counters."""
        return StoreStatistics(
            appends=self._appends,
            events=self._events,
            batches=self._batches,
            conflicts=self._conflicts,
            max_batch=self._max_batch,
            batch_sizes=dict(self._batch_sizes),
        )

    async def run(self) -> None:
        """The writer task: commit batches until closed and drained."""
        try:
            await self._loop()
        finally:
            # Normally empty here. If the writer failed (a bug) or was
            # cancelled, no caller may wait forever for an answer.
            self._closing = True
            self.fail_pending("the store's writer stopped")

    def _take_batch(self, limit: int) -> list[AppendRequest]:
        """Pop the next batch off the queue, up to ``limit`` appends and the event cap."""
        pending = self._pending
        batch: list[AppendRequest] = []
        n_events = 0
        while pending and len(batch) < limit:
            req = pending[0]
            if batch and n_events + len(req.events) > self._max_events:
                break
            pending.popleft()
            # A caller cancelled before its append reached a batch: drop it
            # (absent, never half-written).
            if not req.future.done():
                batch.append(req)
                n_events += len(req.events)
        return batch

    def _start(self, batch: list[AppendRequest]) -> asyncio.Future[int | None]:
        """Hand a batch to the writer thread; the returned future holds its outcome."""
        return asyncio.get_running_loop().run_in_executor(
            self._executor, write_batch, self._conn, batch, self._busy_timeout
        )

    async def _loop(self) -> None:
        # A two-stage pipeline: as soon as batch N is committed, batch N+1
        # (the appends that queued meanwhile) goes to the writer thread, and
        # only then are N's callers resumed, so their next appends are encoded
        # on the event loop while N+1 commits on the other core.
        inflight: tuple[list[AppendRequest], asyncio.Future[int | None]] | None = None
        while True:
            if inflight is None:
                # Pipeline empty: a crowd that queued while we were idle is
                # split in two, so its second half commits while the first
                # half's callers prepare their next appends.
                queued = len(self._pending)
                limit = (queued + 1) // 2 if queued >= _SPLIT_AT else queued
                batch = self._take_batch(min(limit, self._max_appends))
                if not batch:
                    if self._closing and not self._pending:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                inflight = (batch, self._start(batch))
            batch, future = inflight
            outcome: int | Exception | None
            # Shielded: once a batch is on the thread it commits or fails as a
            # whole (a cancelled await would not stop the thread anyway), and
            # every caller still waiting hears the outcome.
            with anyio.CancelScope(shield=True):
                try:
                    outcome = await future
                except Exception as exc:
                    outcome = exc
            following = self._take_batch(self._max_appends)
            inflight = (following, self._start(following)) if following else None
            self._finish(batch, outcome)

    def _finish(self, batch: list[AppendRequest], outcome: int | Exception | None) -> None:
        """Count, announce and resolve a batch the writer thread has finished."""
        if isinstance(outcome, Exception):
            # The whole batch rolled back: every caller still waiting gets its
            # own StoreUnavailable, chained to the driver's error.
            cause = outcome.__cause__ if isinstance(outcome, StoreUnavailable) else outcome
            for req in batch:
                if not req.future.done():
                    err = StoreUnavailable(str(outcome))
                    err.__cause__ = cause
                    req.future.set_exception(err)
            return
        committed: list[AppendRequest] = []
        for req in batch:
            if isinstance(req.outcome, AppendResult):
                committed.append(req)
            elif isinstance(req.outcome, ConcurrencyError):
                self._conflicts += 1
        if outcome is not None:
            n = len(committed)
            self._batches += 1
            self._appends += n
            self._events += sum(len(r.events) for r in committed)
            self._max_batch = max(self._max_batch, n)
            bucket = 1 << (n.bit_length() - 1)  # powers of two: 1, 2-3 -> 2, 4-7 -> 4 ...
            self._batch_sizes[bucket] = self._batch_sizes.get(bucket, 0) + 1
            if self._listeners:  # build RecordedEvents only for someone
                self._announce(recorded_events(committed, outcome))
        for req in batch:
            if not req.future.done():
                if isinstance(req.outcome, AppendResult):
                    req.future.set_result(req.outcome)
                elif req.outcome is not None:
                    req.future.set_exception(req.outcome)


def recorded_events(committed: list[AppendRequest], at_us: int) -> list[RecordedEvent]:
    """A committed batch's events as RecordedEvents, in position order."""
    loads = orjson.loads
    at = from_micros(at_us)
    out: list[RecordedEvent] = []
    for req in committed:
        result = req.outcome
        assert isinstance(result, AppendResult)
        version = result.version - len(req.events)
        for position, ev in zip(result.positions, req.events, strict=True):
            version += 1
            out.append(
                RecordedEvent(
                    position,
                    req.stream,
                    version,
                    ev.type,
                    loads(ev.data),
                    loads(ev.metadata),
                    ev.schema_version,
                    ev.event_id,
                    at,
                )
            )
    return out
