"""The projector pipeline: batches queued on the read model's thread, failures behind them."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import ProjectionFailed
from runtime._projection_sqlite import SQLiteProjector
from runtime._projection_sqlite_file import open_read_model
from runtime._projection_types import FailurePolicy, ProjectorState
from runtime._projector_worker import HANDOFF_MIN_EVENTS, HANDOFF_WAIT, SKIPPED, SinkWorker
from stores import ANY, MemoryStore, NewEvent, RecordedEvent
from tests.test_projections import LOG_SCHEMA, log_positions, seen


class Boom(Exception):
    """The error a faulty handler raises."""


class Gate:
    """A handler that blocks on position 1 until opened, fails on ``bad`` and counts calls."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: Counter[int] = Counter()
        self.blocked = threading.Event()
        self.open = threading.Event()

    def __call__(self, conn: sqlite3.Connection, event: RecordedEvent) -> None:
        self.calls[event.position] += 1
        if event.position == 1 and not self.open.is_set():
            self.blocked.set()
            self.open.wait(10)
        if event.position in self.bad:
            raise Boom(f"cannot handle {event.position}")
        log_positions(conn, event)


async def append(store: MemoryStore, count: int) -> int:
    """Append ``count`` events in one append; return the last position."""
    result = await store.append("S-1", [NewEvent("T.A", {})] * count, ANY)
    return result.positions[-1]


@contextmanager
def opened_gate(gate: Gate) -> Iterator[None]:
    """Open the gate on the way out, so a failing test never leaves the thread stuck."""
    try:
        yield
    finally:
        gate.open.set()


async def queue_batches(
    store: MemoryStore, projector: SQLiteProjector, gate: Gate, *, third: bool = True
) -> None:
    """Batch [1] blocks on the thread, [2, 3] is queued behind it, [4, 5] waits for room."""
    assert await append(store, 1) == 1
    await anyio.to_thread.run_sync(gate.blocked.wait, 10)
    assert await append(store, 2) == 3
    # Queued from the store's commit listener, before the append returned.
    assert projector._submitted == 3
    assert projector.position == 0
    if third:
        assert await append(store, 2) == 5


def log_projector(tmp_path: Path, gate: Gate, **options: Any) -> SQLiteProjector:
    """A ``log_positions`` read model with the gated handler and no retry backoff."""
    return SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=gate, retry_backoff=0, **options
    )


@pytest.mark.anyio
async def test_failure_behind_queued_batches_parks_once_and_applies_the_rest(
    tmp_path: Path,
) -> None:
    """A queued batch that fails is retried, parked with exact attempts; later ones apply once."""
    gate = Gate(bad={3})
    projector = log_projector(tmp_path, gate, policy=FailurePolicy.PARK, max_attempts=2)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        with opened_gate(gate):
            await queue_batches(store, projector, gate)
        await projector.wait_for(5, timeout=10)
        assert [(p.position, p.attempts) for p in await projector.parked()] == [(3, 2)]
        assert gate.calls[3] == 2
        assert projector.statistics().checkpoint == 5
    assert seen(tmp_path, "log") == [1, 2, 4, 5]


@pytest.mark.anyio
async def test_failure_behind_queued_batches_stops_and_resume_goes_on(tmp_path: Path) -> None:
    """STOP on the last queued batch (no page follows it) is seen and keeps the position."""
    gate = Gate(bad={3})
    projector = log_projector(tmp_path, gate, max_attempts=3)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        with opened_gate(gate):
            await queue_batches(store, projector, gate, third=False)
        with pytest.raises(ProjectionFailed) as caught:
            await projector.wait_for(3, timeout=10)
        assert (caught.value.position, caught.value.attempts) == (3, 3)
        stats = projector.statistics()
        assert (stats.state, stats.position, stats.checkpoint) == (ProjectorState.FAILED, 2, 2)
        assert seen(tmp_path, "log") == [1, 2]
        gate.bad.clear()
        await projector.resume()
        assert await append(store, 2) == 5
        await projector.wait_for(5, timeout=10)
    assert seen(tmp_path, "log") == [1, 2, 3, 4, 5]


@pytest.mark.anyio
async def test_pause_returns_once_queued_batches_committed(tmp_path: Path) -> None:
    """pause() waits for the batches already on the read model's thread to commit."""
    gate = Gate(bad=set())
    projector = log_projector(tmp_path, gate)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        with opened_gate(gate):
            await queue_batches(store, projector, gate)
        await projector.pause()
        assert projector.position >= 3  # [1] and [2, 3] were queued: both committed
        assert seen(tmp_path, "log") == list(range(1, projector.position + 1))
        await projector.resume()
        await projector.wait_for(5, timeout=10)
    assert seen(tmp_path, "log") == [1, 2, 3, 4, 5]


@pytest.mark.anyio
async def test_reset_to_zero_with_queued_batches_replays_exactly_once(tmp_path: Path) -> None:
    """reset(0) while batches are queued: the fresh read model holds every event once."""
    gate = Gate(bad=set())
    projector = log_projector(tmp_path, gate)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        with opened_gate(gate):
            await queue_batches(store, projector, gate)
        await projector.reset(0)
        await projector.wait_for(5, timeout=10)
        assert projector.generation == 2
    assert seen(tmp_path, "log") == [1, 2, 3, 4, 5]


@pytest.mark.anyio
async def test_stopping_with_queued_batches_keeps_the_checkpoint_forward(tmp_path: Path) -> None:
    """Leaving the engine lets queued batches commit first, then ends the read model's thread."""
    gate = Gate(bad=set())
    projector = log_projector(tmp_path, gate)
    async with MemoryStore() as store:
        async with ProjectionEngine(store, [projector]):
            with opened_gate(gate):
                await queue_batches(store, projector, gate)
        conn = open_read_model(tmp_path, "log")
        try:
            row = conn.execute("SELECT position FROM _projection_checkpoint").fetchone()
        finally:
            conn.close()
        assert row is not None
        assert row[0] >= 3
        assert seen(tmp_path, "log") == list(range(1, row[0] + 1))
        await no_read_model_threads()
        again = log_projector(tmp_path, Gate(bad=set()))
        async with ProjectionEngine(store, [again]):
            await again.wait_for(5, timeout=10)
    assert seen(tmp_path, "log") == [1, 2, 3, 4, 5]
    await no_read_model_threads()


async def no_read_model_threads() -> None:
    """Assert every read model's thread ends once its engine has stopped."""
    for thread in threading.enumerate():
        if thread.name.startswith("read-model log."):
            await anyio.to_thread.run_sync(thread.join, 10)
            assert not thread.is_alive()


@pytest.mark.anyio
async def test_sink_worker_runs_in_order_and_skips_after_a_pipelined_failure() -> None:
    """Calls run in order; a failed pipelined call skips later ones until rearm; stop ends it."""
    worker = SinkWorker("test-worker")
    ran: list[int] = []
    outcomes: list[tuple[bool, Any]] = []

    def record(n: int) -> int:
        ran.append(n)
        if n == 2:
            raise Boom("two")
        return n

    def done(ok: bool, value: Any) -> None:
        outcomes.append((ok, value))

    assert await worker.call(record, 1) == 1
    for n in (2, 3):
        worker.pipeline(record, (n,), done)
    with pytest.raises(Boom):
        await worker.call(record, 2)  # plain calls still run after a pipelined failure
    assert ran == [1, 2, 2]
    assert outcomes[0][0] is False
    assert isinstance(outcomes[0][1], Boom)
    assert outcomes[1] == (True, SKIPPED)
    worker.rearm()
    worker.pipeline(record, (4,), done)
    assert await worker.call(record, 5) == 5
    assert outcomes[2] == (True, 4)
    thread = worker._thread
    assert thread is not None
    worker.stop()
    await anyio.to_thread.run_sync(thread.join, 10)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_a_batch_committed_in_the_writer_process_is_handed_the_gil(tmp_path: Path) -> None:
    """The smallest batch SQLiteStore commits in its process is a live page the loop hands off.

    No writer thread yields the GIL once batches go to the process, so the loop
    can be busy at that size: with the hand-off from 64 events and the process
    from 16 appends, a read model fell 91-301 ms behind at 100 callers.
    """
    from stores import SQLiteStore
    from stores._sqlite_writer import LARGE_BATCH

    gate = Gate(bad=set())
    gate.open.set()
    projector = log_projector(tmp_path, gate)
    store = SQLiteStore(tmp_path / "events.db", writer="process")
    async with store, ProjectionEngine(store, [projector]):
        sink = projector._sink
        assert sink is not None
        worker = sink._worker  # type: ignore[attr-defined]
        # Only a live page is handed off: one read from the log (the projector
        # not yet on the live feed when the batch commits) is not.
        with anyio.fail_after(10):
            while not projector.statistics().live:  # noqa: ASYNC110 - no event reports it
                await anyio.sleep(0.001)
        async with anyio.create_task_group() as tg:  # one crowd: one batch, one page
            for n in range(LARGE_BATCH):
                tg.start_soon(store.append, f"S-{n}", [NewEvent("T.A", {})], 0)
        await projector.wait_for(LARGE_BATCH, timeout=10)
        assert store.statistics().batch_sizes == {LARGE_BATCH: 1}
        assert worker.handoffs + worker.handoff_timeouts == 1


@pytest.mark.anyio
async def test_large_pipelined_batch_hands_the_gil_over_small_one_does_not() -> None:
    """A batch of HANDOFF_MIN_EVENTS or more returns only once applied; a smaller one at once."""
    worker = SinkWorker("test-worker")
    applied: list[int] = []

    def apply(n: int) -> None:
        time.sleep(0.005)  # far shorter than HANDOFF_WAIT, far longer than a thread start
        applied.append(n)

    try:
        worker.pipeline(apply, (1,), lambda ok, value: None, HANDOFF_MIN_EVENTS)
        assert applied == [1]  # the loop waited for it (the GIL hand-off)
        assert (worker.handoffs, worker.handoff_timeouts) == (1, 0)
        worker.pipeline(apply, (2,), lambda ok, value: None, HANDOFF_MIN_EVENTS - 1)
        assert applied == [1]  # queued, not waited for
        assert await worker.call(len, applied) == 2
    finally:
        worker.stop()


@pytest.mark.anyio
async def test_handoff_wait_is_bounded_and_backs_off_for_a_slow_read_model() -> None:
    """A batch not done within HANDOFF_WAIT is left running; the next 1, 2, 4... go unwaited."""
    worker = SinkWorker("test-worker")
    gate = threading.Event()
    started: list[int] = []

    def slow(n: int) -> None:
        started.append(n)
        gate.wait(10)  # held until the test opens the gate

    big = HANDOFF_MIN_EVENTS
    try:
        t0 = time.perf_counter()
        worker.pipeline(slow, (1,), lambda ok, value: None, big)
        waited = time.perf_counter() - t0
        assert HANDOFF_WAIT * 0.9 <= waited < 5  # bounded: it gave up while the call still ran
        assert (worker.handoffs, worker.handoff_timeouts) == (0, 1)
        # Back-off: the next batch is queued without waiting at all...
        worker.pipeline(slow, (2,), lambda ok, value: None, big)
        assert worker.handoff_timeouts == 1
        # ...the one after is waited for again (and times out: skip 2 next)...
        worker.pipeline(slow, (3,), lambda ok, value: None, big)
        assert worker.handoff_timeouts == 2
        for n in (4, 5):
            worker.pipeline(slow, (n,), lambda ok, value: None, big)
        assert worker.handoff_timeouts == 2
        gate.set()
        assert await worker.call(len, started) == 5  # every batch still ran, in order
        # A batch done in time resets the back-off.
        worker.pipeline(lambda: None, (), lambda ok, value: None, big)
        assert (worker.handoffs, worker.handoff_timeouts) == (1, 2)
        worker.pipeline(lambda: None, (), lambda ok, value: None, big)
        assert (worker.handoffs, worker.handoff_timeouts) == (2, 2)
    finally:
        gate.set()
        worker.stop()


@pytest.mark.anyio
async def test_only_live_batches_are_handed_the_gil(tmp_path: Path) -> None:
    """Catch-up pages read from the log never block the loop; a large live batch does."""
    gate = Gate(bad=set())
    gate.open.set()
    projector = log_projector(tmp_path, gate)
    async with MemoryStore() as store:
        await append(store, 3 * HANDOFF_MIN_EVENTS)  # before the projector: read from the log
        async with ProjectionEngine(store, [projector]):
            await projector.wait_for(3 * HANDOFF_MIN_EVENTS, timeout=10)
            sink = projector._sink
            assert sink is not None
            worker = sink._worker  # type: ignore[attr-defined]
            assert (worker.handoffs, worker.handoff_timeouts) == (0, 0)
            last = await append(store, HANDOFF_MIN_EVENTS)  # one commit: one live batch
            await projector.wait_for(last, timeout=10)
            assert worker.handoffs + worker.handoff_timeouts == 1
            assert await append(store, HANDOFF_MIN_EVENTS - 1) == last + HANDOFF_MIN_EVENTS - 1
            await projector.wait_for(last + HANDOFF_MIN_EVENTS - 1, timeout=10)
            assert worker.handoffs + worker.handoff_timeouts == 1  # small: not waited for
    assert seen(tmp_path, "log") == list(range(1, last + HANDOFF_MIN_EVENTS))


@pytest.mark.anyio
async def test_a_page_overlapping_what_was_applied_hands_only_the_new_events() -> None:
    """Exactly once: events at or below the projector's position are dropped from a page
    (a live page can overlap the end of a catch-up read)."""
    from runtime._projection_store import StoreProjector
    from runtime._projection_types import Page
    from runtime._projector_batch import process_page
    from stores import ANY, MemoryStore, NewEvent

    async with MemoryStore() as store:
        await store.append("S-1", [NewEvent("T.A", {"n": n}) for n in range(4)], ANY)
        events = await store.read_all(0, 10)
        handled: list[int] = []

        async def handler(event: RecordedEvent) -> None:
            handled.append(event.position)

        projector = StoreProjector("p", handler)
        projector._sink = projector._make_sink(store, handler)
        projector._position = projector._saved = 2
        await process_page(projector, Page(events, 4))
        assert handled == [3, 4]
