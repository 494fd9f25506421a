"""pause(): once it returns, the handler is not called and the read model does not move.

The pipelined SQLite read model can have a batch on its thread when pause()
is called; pause() waits for it (drain), but a batch that *fails* there is
not applied by the drain: the projector applies it the slow way (retry,
split, park or stop) afterwards, and that must wait for resume().
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from runtime._projection_engine import ProjectionEngine
from runtime._projection_sqlite import SQLiteProjector
from runtime._projection_types import ProjectorState
from stores import ANY, EventStore, MemoryStore, NewEvent, SQLiteStore
from tests.test_projections import seen
from tests.test_projections_pipeline import Gate, log_projector, opened_gate


def new_store(backend: str, tmp_path: Path) -> EventStore:
    """A memory or SQLite event store (the bus and the commit listener differ)."""
    return MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "events.db")


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (polling the loop) until ``predicate()`` holds, for 10 s at most."""
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - polls private state no event reports
            await anyio.sleep(0.001)


async def stays(predicate: Callable[[], bool], seconds: float = 0.5) -> bool:
    """True if ``predicate()`` held at every check for ``seconds`` (False at the first miss)."""
    with anyio.move_on_after(seconds):
        while predicate():  # noqa: ASYNC110 - waits for a change that must not happen
            await anyio.sleep(0.005)
        return False
    return True


async def fail_a_batch_during_pause(
    store: EventStore, projector: SQLiteProjector, gate: Gate
) -> None:
    """Queue batch [1] (it blocks on the thread), pause, and let it fail during the drain.

    The interleaving: batch [1] is on the read model's thread; pause() takes
    the lock and waits for it (drain); the batch fails (its transaction
    rolls back) and pause() returns. The failure also woke the projector's
    task (it was waiting for a page), which would now apply [1] the slow way.
    """
    with opened_gate(gate):
        await store.append("S-1", [NewEvent("T.A", {})], ANY)
        await anyio.to_thread.run_sync(gate.blocked.wait, 10)
        assert projector._inflight == 1  # batch [1] is on the thread, blocked
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.pause)
            await until(lambda: projector._pipe_changed is not None)  # pause() drains
            gate.open.set()  # batch [1] fails: the drain ends, pause() returns
    gate.bad.clear()  # the failure was transient: a retry now would commit


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_batch_failing_during_pause_is_not_retried_until_resume(
    tmp_path: Path, backend: str
) -> None:
    """A queued batch that fails while pause() drains it is retried after resume(), once."""
    gate = Gate(bad={1})
    projector = log_projector(tmp_path / "read-models", gate)
    store = new_store(backend, tmp_path)
    async with store, ProjectionEngine(store, [projector]):
        await fail_a_batch_during_pause(store, projector, gate)
        assert await stays(lambda: gate.calls[1] == 1), "handler called while paused"
        stats = projector.statistics()
        assert (stats.state, stats.position, stats.checkpoint) == (ProjectorState.PAUSED, 0, 0)
        assert seen(tmp_path / "read-models", "log") == []

        await projector.resume()
        await projector.wait_for(1, timeout=10)
        assert gate.calls[1] == 2  # retried once, after resume
        await store.append("S-1", [NewEvent("T.A", {})] * 2, ANY)
        await projector.wait_for(3, timeout=10)
    assert seen(tmp_path / "read-models", "log") == [1, 2, 3]


@pytest.mark.anyio
async def test_reset_while_paused_after_a_failed_batch_stays_paused(tmp_path: Path) -> None:
    """reset(0) drops the failed batch; the projector stays paused, then replays exactly once."""
    gate = Gate(bad={1})
    projector = log_projector(tmp_path / "read-models", gate)
    store = new_store("memory", tmp_path)
    async with store, ProjectionEngine(store, [projector]):
        await fail_a_batch_during_pause(store, projector, gate)
        await projector.reset(0)
        await store.append("S-1", [NewEvent("T.A", {})], ANY)
        assert await stays(lambda: gate.calls.total() == 1), "handler called while paused"
        assert (projector.state, projector.position) == (ProjectorState.PAUSED, 0)

        await projector.resume()
        await projector.wait_for(2, timeout=10)
        assert (gate.calls[1], gate.calls[2]) == (2, 1)
    assert seen(tmp_path / "read-models", "log") == [1, 2]


@pytest.mark.anyio
async def test_a_pause_cancelled_while_it_waits_still_pauses(tmp_path: Path) -> None:
    """Cancelling pause() (a timeout) cancels the wait, not the pause: resume() undoes it.

    pause() waits for the projector's lock (here held by a reset() that drains
    a blocked batch); the drain itself is shielded.
    """
    gate = Gate(bad=set())
    projector = log_projector(tmp_path / "read-models", gate)
    store = new_store("memory", tmp_path)
    async with store, ProjectionEngine(store, [projector]):
        async with anyio.create_task_group() as tg:
            with opened_gate(gate):
                await store.append("S-1", [NewEvent("T.A", {})], ANY)
                await anyio.to_thread.run_sync(gate.blocked.wait, 10)  # batch [1] on the thread
                tg.start_soon(projector.reset, 0)  # takes the lock and drains
                await until(lambda: projector._pipe_changed is not None)
                with anyio.move_on_after(0.05) as scope:
                    await projector.pause()
                assert scope.cancelled_caught
                assert projector.state is ProjectorState.PAUSED
        # reset(0) finished once [1] committed; the projector stays paused.
        await store.append("S-1", [NewEvent("T.A", {})], ANY)
        assert await stays(lambda: gate.calls[2] == 0), "handler called while paused"
        await projector.resume()
        await projector.wait_for(2, timeout=10)
    assert seen(tmp_path / "read-models", "log") == [1, 2]
