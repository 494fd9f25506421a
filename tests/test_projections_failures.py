"""Projector failures (stop, park, retry) and operations (pause, resume, reset, statistics)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import (
    ParkedEventNotFound,
    ProjectionConfigError,
    ProjectionFailed,
    ProjectionTimeout,
)
from runtime._projection_sqlite import SQLiteProjector
from runtime._projection_store import StoreProjector, TransactionalStoreProjector
from runtime._projection_types import FailurePolicy, ProjectorState
from runtime.examples.read_models import account_balances, get_balance, list_balances
from stores import (
    ANY,
    EventStore,
    MemoryStore,
    NewEvent,
    RecordedEvent,
    SQLiteStore,
    StoreUnavailable,
)
from tests.projection_child import deposited, opened, write_bank
from tests.test_projections import LOG_SCHEMA, log_positions, seen


class Boom(Exception):
    """The error a faulty handler raises."""


def faulty(bad: set[int]) -> Any:
    """A log_positions handler that raises on the positions in ``bad`` (a live set)."""

    def handler(conn: sqlite3.Connection, event: RecordedEvent) -> None:
        if event.position in bad:
            raise Boom(f"cannot handle {event.position}")
        log_positions(conn, event)

    return handler


async def fill(store: EventStore, count: int) -> int:
    """Append ``count`` events in one append; return the last position."""
    result = await store.append("S-1", [NewEvent("T.A", {"n": n}) for n in range(count)], ANY)
    return result.positions[-1]


@pytest.mark.anyio
async def test_stop_policy_stops_before_the_failing_event(tmp_path: Path) -> None:
    """STOP keeps the checkpoint before the bad event, surfaces the error, and resume retries."""
    bad = {6}
    projector = SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=faulty(bad), max_attempts=3, retry_backoff=0
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 10)
        with pytest.raises(ProjectionFailed) as caught:
            await projector.wait_for(last, timeout=10)
        assert isinstance(caught.value.__cause__, Boom)
        assert (caught.value.position, caught.value.attempts) == (6, 3)
        await projector.wait_for(5, timeout=10)  # before the failure: fine
        stats = projector.statistics()
        assert (stats.state, stats.position, stats.checkpoint) == (ProjectorState.FAILED, 5, 5)
        assert stats.retries == 2
        assert stats.error is not None
        assert "Boom" in stats.error
        assert seen(tmp_path, "log") == [1, 2, 3, 4, 5]  # the batch's good prefix committed

        bad.clear()  # "deploy the fix"
        await projector.resume()
        await projector.wait_for(last, timeout=10)
        assert projector.state is ProjectorState.RUNNING
    assert seen(tmp_path, "log") == list(range(1, 11))


@pytest.mark.anyio
async def test_park_policy_parks_and_goes_on(tmp_path: Path) -> None:
    """PARK records the bad event with its error, applies the rest, and can retry it later."""
    bad = {3, 7}
    projector = SQLiteProjector(
        "log",
        tmp_path,
        schema=LOG_SCHEMA,
        handler=faulty(bad),
        policy=FailurePolicy.PARK,
        max_attempts=2,
        retry_backoff=0,
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 10)
        await projector.wait_for(last, timeout=10)
        parked = await projector.parked()
        assert [(p.position, p.attempts) for p in parked] == [(3, 2), (7, 2)]
        assert parked[0].error == "Boom: cannot handle 3"
        assert projector.statistics().parked == 2
        assert seen(tmp_path, "log") == [1, 2, 4, 5, 6, 8, 9, 10]

        with pytest.raises(ParkedEventNotFound):
            await projector.retry_parked(5)
        still = await projector.retry_parked()  # still failing: stays parked, attempts grow
        assert [(p.position, p.attempts) for p in still] == [(3, 3), (7, 3)]
        bad.discard(7)
        assert [p.position for p in await projector.retry_parked(7)] == [3]
    assert seen(tmp_path, "log") == [1, 2, 4, 5, 6, 7, 8, 9, 10]


@pytest.mark.anyio
async def test_failed_batch_is_rolled_back_so_no_effect_repeats(tmp_path: Path) -> None:
    """A batch failing midway is rolled back and its good prefix is applied exactly once."""
    projector = account_balances(
        tmp_path, policy=FailurePolicy.PARK, max_attempts=1, retry_backoff=0
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        await store.append(
            "Account-1",
            [opened("x"), deposited(5), NewEvent("Account.Deposited", {}), deposited(7)],
            0,
        )
        await projector.wait_for(4, timeout=10)
        balance = await get_balance(projector, "1")
        assert balance is not None
        assert (balance.balance, balance.events) == (12, 3)
        assert [p.position for p in await projector.parked()] == [3]


@pytest.mark.anyio
async def test_pause_resume_and_lag(tmp_path: Path) -> None:
    """A paused projector applies nothing and shows its lag; resume catches it up."""
    projector = account_balances(tmp_path)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        first = await write_bank(store, accounts=2, rounds=1)
        await projector.wait_for(first, timeout=10)
        await projector.pause()
        last = await write_bank(store, accounts=2, rounds=3, start=1)
        with pytest.raises(ProjectionTimeout):
            await projector.wait_for(last, timeout=0.2)
        stats = projector.statistics()
        assert stats.state is ProjectorState.PAUSED
        assert (stats.position, stats.lag_events) == (first, last - first)
        await projector.resume()
        await projector.wait_for(last, timeout=10)
        assert projector.statistics().lag_events == 0


@pytest.mark.anyio
async def test_reset_to_zero_replays_into_an_empty_read_model(tmp_path: Path) -> None:
    """reset(0) starts the read model empty and replays: balances are not doubled."""
    projector = account_balances(tmp_path)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await write_bank(store, accounts=3, rounds=10)
        await projector.wait_for(last, timeout=10)
        before = await list_balances(projector)
        generation = projector.generation
        await projector.reset(0)
        assert projector.generation == generation + 1
        await projector.wait_for(last, timeout=10)
        assert await list_balances(projector) == before
        with pytest.raises(ProjectionConfigError):
            await projector.reset(-1)


@pytest.mark.anyio
async def test_reset_forward_skips_events(tmp_path: Path) -> None:
    """reset(p) with p ahead moves the checkpoint: the events up to p are not applied."""
    projector = SQLiteProjector("log", tmp_path, schema=LOG_SCHEMA, handler=log_positions)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        await projector.pause()
        last = await fill(store, 10)
        await projector.reset(6)
        await projector.resume()
        await projector.wait_for(last, timeout=10)
    assert seen(tmp_path, "log") == [7, 8, 9, 10]


@pytest.mark.anyio
async def test_store_projector_is_at_least_once_with_checkpoint_in_store(tmp_path: Path) -> None:
    """A generic projector saves its checkpoint in the store and resumes after it."""
    handled: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        handled.append(event.position)

    async with MemoryStore() as store:
        projector = StoreProjector("generic", handler, types=["T.A"])
        async with ProjectionEngine(store, [projector]):
            last = await fill(store, 5)
            await projector.wait_for(last, timeout=10)
        assert await store.get_checkpoint("generic") == 5
        last = await fill(store, 3)
        async with ProjectionEngine(store, [StoreProjector("generic", handler)]) as engine:
            await engine.wait_for(last, timeout=10)
    assert handled == list(range(1, 9))


@pytest.mark.anyio
async def test_store_projector_parks_in_its_dead_letter_file(tmp_path: Path) -> None:
    """A generic projector parks to its dead-letter file; a PARK without one is refused."""
    with pytest.raises(ProjectionConfigError):
        StoreProjector("generic", lambda e: None, policy=FailurePolicy.PARK)  # type: ignore[arg-type, return-value]
    handled: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        if event.position == 2:
            raise Boom("no")
        handled.append(event.position)

    projector = StoreProjector(
        "generic",
        handler,
        policy=FailurePolicy.PARK,
        dead_letters=tmp_path / "dead.sqlite",
        max_attempts=1,
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 4)
        await projector.wait_for(last, timeout=10)
        assert [p.position for p in await projector.parked()] == [2]
    assert handled == [1, 3, 4]


@pytest.mark.anyio
async def test_transactional_store_projector_commits_with_its_checkpoint() -> None:
    """A read model in the store's own database commits with the checkpoint, or not at all."""
    fail = {3}

    async def handler(data: dict[str, Any], event: RecordedEvent) -> None:
        if event.position in fail:
            raise Boom("no")
        data[str(event.position)] = event.type

    projector = TransactionalStoreProjector("in_store", handler, max_attempts=1)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await fill(store, 5)
        with pytest.raises(ProjectionFailed):
            await projector.wait_for(last, timeout=10)
        assert store.consumer_data("in_store") == {"1": "T.A", "2": "T.A"}
        assert await store.get_checkpoint("in_store") == 2
        fail.clear()
        await projector.resume()
        await projector.wait_for(last, timeout=10)
        assert sorted(store.consumer_data("in_store"), key=int) == ["1", "2", "3", "4", "5"]


class FlakyStore(MemoryStore):
    """A memory store whose next ``fail_reads`` log reads raise StoreUnavailable."""

    fail_reads = 0

    async def read_all(self, *args: Any, **kwargs: Any) -> list[RecordedEvent]:
        if self.fail_reads:
            self.fail_reads -= 1
            raise StoreUnavailable("disk on fire")
        return await super().read_all(*args, **kwargs)


@pytest.mark.anyio
async def test_failing_log_reads_restart_the_subscription(tmp_path: Path) -> None:
    """A projector whose log reads fail restarts from its position and loses nothing."""
    projector = SQLiteProjector(
        "log", tmp_path, schema=LOG_SCHEMA, handler=log_positions, retry_backoff=0
    )
    async with FlakyStore() as store:
        last = await fill(store, 10)
        store.fail_reads = 3
        async with ProjectionEngine(store, [projector]):
            await projector.wait_for(last, timeout=10)
            assert store.fail_reads == 0
    assert seen(tmp_path, "log") == list(range(1, 11))


@pytest.mark.anyio
async def test_transactional_projector_on_the_sqlite_store(tmp_path: Path) -> None:
    """With SQLiteStore the read model shares the log's database and commits with the checkpoint."""

    async def handler(conn: Any, event: RecordedEvent) -> None:
        await conn.execute("INSERT INTO seen VALUES (?, ?)", (event.position, event.type))

    async with SQLiteStore(tmp_path / "events.db") as store:
        async with store.open_consumer_transaction("setup") as tx:
            await tx.connection.execute(LOG_SCHEMA)
        projector = TransactionalStoreProjector("in_db", handler, types=["T.A"])
        async with ProjectionEngine(store, [projector]):
            last = await fill(store, 5)
            await store.append("S-2", [NewEvent("T.B", {})], ANY)
            await projector.wait_for(last, timeout=10)
        async with store.open_consumer_transaction("check") as tx:
            cursor = await tx.connection.execute("SELECT position FROM seen ORDER BY position")
            rows = [row[0] for row in await cursor.fetchall()]
        assert rows == [1, 2, 3, 4, 5]
        assert await store.get_checkpoint("in_db") >= last


@pytest.mark.anyio
async def test_store_projector_checkpoint_stays_before_the_failing_event() -> None:
    """A StoreProjector that stops on an event keeps its checkpoint just before it, so a
    restart with the fixed handler is handed that event (checkpoints never go back)."""
    handled: list[int] = []
    fail_at = {3}

    async def handler(event: RecordedEvent) -> None:
        if event.position in fail_at:
            raise Boom(f"cannot handle {event.position}")
        handled.append(event.position)

    async with MemoryStore() as store:
        await fill(store, 5)
        projector = StoreProjector("p", handler, max_attempts=1, retry_backoff=0)
        async with ProjectionEngine(store, [projector]):
            with pytest.raises(ProjectionFailed):
                await projector.wait_for(5, timeout=5)
        assert await store.get_checkpoint("p") == 2
        fail_at.clear()  # the fix deployed: event 3 must be delivered now
        again = StoreProjector("p", handler)
        async with ProjectionEngine(store, [again]):
            await again.wait_for(5, timeout=5)
        assert handled == [1, 2, 3, 4, 5]
