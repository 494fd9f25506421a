"""``SQLiteProjector(on_commit=...)``: the read model's post-COMMIT hook."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import ProjectionConfigError, ProjectionFailed
from runtime._projection_rebuild import rebuild
from runtime._projection_sqlite import SQLiteProjector
from runtime._projection_types import FailurePolicy, ProjectorState
from stores import ANY, MemoryStore, NewEvent
from tests.test_projections import LOG_SCHEMA, log_positions, seen
from tests.test_projections_failures import faulty, fill


class Recorder:
    """An ``on_commit`` hook that records each position and the thread it ran on."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, position: int) -> None:
        with self._lock:
            self.positions.append(position)
            self.threads.add(threading.current_thread().name)


def strictly_increasing(values: list[int]) -> bool:
    """True when each value is greater than the one before."""
    return all(a < b for a, b in itertools.pairwise(values))


@pytest.mark.anyio
async def test_on_commit_reports_every_committed_batch_on_the_read_models_thread(
    tmp_path: Path,
) -> None:
    """Catch-up and live batches each report their new checkpoint once, before wait_for returns."""
    hook = Recorder()
    projector = SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=log_positions, on_commit=hook, batch_size=4
    )
    async with MemoryStore() as store:
        await fill(store, 10)  # read during catch-up, in pages of 4
        async with ProjectionEngine(store, [projector]):
            for n in range(5):  # live appends
                await store.append("S-2", [NewEvent("T.B", {"n": n})] * 2, ANY)
            last = await store.head()
            await projector.wait_for(last, timeout=10)
            # The hook runs right after COMMIT, before the loop hears of it.
            assert hook.positions[-1] == last
            batches = projector.statistics().batches
    assert strictly_increasing(hook.positions)
    assert len(hook.positions) == batches
    assert hook.positions[:2] == [4, 8]  # one call per catch-up page
    assert threading.main_thread().name not in hook.threads
    assert seen(tmp_path, "log") == list(range(1, last + 1))


@pytest.mark.anyio
async def test_on_commit_is_not_called_for_a_rolled_back_batch(tmp_path: Path) -> None:
    """A failing batch is rolled back unreported; only its committed good prefix is reported."""
    bad = {6}
    hook = Recorder()
    projector = SQLiteProjector(
        "log",
        tmp_path,
        schema=LOG_SCHEMA,
        handler=faulty(bad),
        on_commit=hook,
        max_attempts=2,
        retry_backoff=0,
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 10)
        with pytest.raises(ProjectionFailed):
            await projector.wait_for(last, timeout=10)
        assert hook.positions == [5]  # 1..10 and the retries of 6 rolled back
        bad.clear()
        await projector.resume()
        await projector.wait_for(last, timeout=10)
    assert hook.positions == [5, 10]


@pytest.mark.anyio
async def test_parking_an_event_reports_the_checkpoint_it_moved_past(tmp_path: Path) -> None:
    """PARK commits the dead letter with the checkpoint past it: that commit is reported too."""
    hook = Recorder()
    projector = SQLiteProjector(
        "log",
        tmp_path,
        schema=LOG_SCHEMA,
        handler=faulty({3}),
        on_commit=hook,
        policy=FailurePolicy.PARK,
        max_attempts=1,
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 10)
        await projector.wait_for(last, timeout=10)
    assert hook.positions == [2, 3, 10]  # good prefix, park, the rest


@pytest.mark.anyio
async def test_a_failing_on_commit_is_logged_and_the_projector_goes_on(tmp_path: Path) -> None:
    """An exception in the hook is logged and swallowed: every event still lands, once."""
    calls: list[int] = []

    def broken(position: int) -> None:
        calls.append(position)
        raise RuntimeError("observer bug")

    projector = SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=log_positions, on_commit=broken, batch_size=3
    )
    with capture_logs() as logs:
        async with MemoryStore() as store, ProjectionEngine(store, [projector]):
            last = await fill(store, 10)
            await projector.wait_for(last, timeout=10)
            assert projector.state is ProjectorState.RUNNING
    assert calls == [3, 6, 9, 10]
    assert seen(tmp_path, "log") == list(range(1, 11))
    failures = [e for e in logs if e["event"] == "on_commit hook failed"]
    assert len(failures) == len(calls)


@pytest.mark.anyio
async def test_rebuild_copy_is_not_reported_but_live_batches_after_the_swap_are(
    tmp_path: Path,
) -> None:
    """The rebuild's copy never calls the hook; the swapped-in generation does."""
    hook = Recorder()
    projector = SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=log_positions, on_commit=hook
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        first = await fill(store, 10)
        await projector.wait_for(first, timeout=10)
        before = list(hook.positions)
        await rebuild(projector, display=False)
        assert hook.positions == before  # the copy's commits are not live progress
        last = await fill(store, 5)
        await projector.wait_for(last, timeout=10)
    assert hook.positions[-1] == last
    assert strictly_increasing(hook.positions)
    assert seen(tmp_path, "log") == list(range(1, last + 1))


def test_on_commit_must_be_callable(tmp_path: Path) -> None:
    """A non-callable hook is refused at construction."""
    with pytest.raises(ProjectionConfigError, match="on_commit"):
        SQLiteProjector(
            "log",
            tmp_path,
            schema=LOG_SCHEMA,
            handler=log_positions,
            on_commit=42,  # type: ignore[arg-type]
        )
