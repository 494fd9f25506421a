"""Rebuilds: a fresh copy beside the live read model, progress, atomic swap, a fixed handler."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path

import anyio
import pytest

from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import (
    ProjectionError,
    ProjectionFailed,
    ProjectorNotRunning,
    RebuildFailed,
)
from runtime._projection_rebuild import RebuildProgress, rebuild
from runtime._projection_sqlite_file import current_generation
from runtime._projection_types import FailurePolicy, ProjectorState
from runtime.examples.read_models import account_balances, list_balances
from stores import ANY, MemoryStore, NewEvent, RecordedEvent, SQLiteStore
from tests.projection_child import deposited, write_bank

UPSERT = (
    "INSERT INTO account_balances (account_id, balance, events) VALUES (?, ?, 1) "
    "ON CONFLICT (account_id) DO UPDATE SET balance = balance + excluded.balance, "
    "events = events + 1"
)


def doubling(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    """A buggy balances handler: deposits count twice."""
    from runtime.examples.read_models import _apply_account_event

    _apply_account_event(conn, event)
    if event.type == "Account.Deposited":
        conn.execute(UPSERT, (event.stream.partition("-")[2], event.data["amount"]))


async def fresh_balances(
    store: MemoryStore | SQLiteStore, directory: Path, head: int
) -> list[object]:
    """The balances a brand-new projector computes from the whole log."""
    projector = account_balances(directory)
    async with ProjectionEngine(store, [projector]):
        await projector.wait_for(head, timeout=30)
        return list(await list_balances(projector))


@pytest.mark.anyio
async def test_rebuild_applies_a_fixed_handler_while_writes_go_on(tmp_path: Path) -> None:
    """A rebuild with a fixed handler swaps in a copy equal to a from-scratch build."""
    from runtime.examples.read_models import _apply_account_event

    live = tmp_path / "live"
    projector = account_balances(live, handler=doubling, batch_size=64)
    reports: list[RebuildProgress] = []
    generations: list[int | None] = []

    def on_progress(progress: RebuildProgress) -> None:
        reports.append(progress)
        generations.append(current_generation(live, "account_balances"))

    async with SQLiteStore(tmp_path / "events.db") as store:
        await write_bank(store, accounts=8, rounds=40, per_append=5)
        async with ProjectionEngine(store, [projector]):
            await projector.wait_for(await store.head(), timeout=30)
            old_path = projector.path
            wrong = {b.account_id: b.balance for b in await list_balances(projector)}

            projector.handler = _apply_account_event  # "deploy the fix"
            async with anyio.create_task_group() as tg:

                async def keep_writing() -> None:
                    for n in range(60):
                        await store.append(f"Account-{n % 8}", [deposited(1)], ANY)

                tg.start_soon(keep_writing)
                final = await rebuild(projector, progress=on_progress, page_size=500, display=False)
            head = await store.head()
            await projector.wait_for(head, timeout=30)
            rebuilt = await list_balances(projector)
            assert not old_path.exists()
            assert projector.path != old_path
            assert projector.path.exists()

        assert final.done
        assert final.position >= reports[0].position
        assert final.events > 0
        # Queries kept the old file until the swap; the final report comes after it.
        assert set(generations[:-1]) == {1}
        assert generations[-1] == 2
        assert reports[-1].done
        assert current_generation(live, "account_balances") == 2
        expected = await fresh_balances(store, tmp_path / "fresh", head)
    assert rebuilt == expected
    right = {b.account_id: b.balance for b in rebuilt}
    assert all(wrong[k] > right[k] for k in wrong)  # the bug was really fixed


@pytest.mark.anyio
async def test_rebuild_clears_a_stopped_projector(tmp_path: Path) -> None:
    """A projector stopped on a bad event runs again after a rebuild with a fixed handler."""
    bad = {"on": True}

    def handler(conn: sqlite3.Connection, event: RecordedEvent) -> None:
        if bad["on"] and event.data.get("amount") == 13:
            raise ValueError("13")
        from runtime.examples.read_models import _apply_account_event

        _apply_account_event(conn, event)

    projector = account_balances(tmp_path, handler=handler, max_attempts=1)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        await store.append("Account-1", [deposited(1), deposited(13), deposited(2)], 0)
        with pytest.raises(ProjectionFailed, match="13"):
            await projector.wait_for(3, timeout=10)
        with pytest.raises(RebuildFailed):
            await rebuild(projector, display=False)  # still broken: live model untouched
        assert current_generation(tmp_path, "account_balances") == 1
        bad["on"] = False
        await rebuild(projector, display=False)
        await projector.wait_for(3, timeout=10)
        assert projector.state is ProjectorState.RUNNING
        assert [b.balance for b in await list_balances(projector)] == [16]


@pytest.mark.anyio
async def test_rebuild_parks_under_the_park_policy(tmp_path: Path) -> None:
    """Under PARK, a rebuild parks the failing event in the new copy and completes."""

    def handler(conn: sqlite3.Connection, event: RecordedEvent) -> None:
        if event.data.get("amount") == 13:
            raise ValueError("13")
        from runtime.examples.read_models import _apply_account_event

        _apply_account_event(conn, event)

    projector = account_balances(
        tmp_path, handler=handler, policy=FailurePolicy.PARK, max_attempts=1
    )
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        await store.append("Account-1", [deposited(1), deposited(13), deposited(2)], 0)
        await projector.wait_for(3, timeout=10)
        await rebuild(projector, display=False)
        await projector.wait_for(3, timeout=10)
        assert [p.position for p in await projector.parked()] == [2]


@pytest.mark.anyio
async def test_rebuild_needs_a_running_projector(tmp_path: Path) -> None:
    """Rebuilding a projector outside a running engine raises ProjectorNotRunning."""
    with pytest.raises(ProjectorNotRunning):
        await rebuild(account_balances(tmp_path), display=False)


@pytest.mark.anyio
async def test_rebuild_reports_progress_as_log_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal, progress goes to the log; the final report says done."""
    projector = account_balances(tmp_path)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = (
            await store.append("Account-1", [NewEvent("Account.Deposited", {"amount": 1})], 0)
        ).positions[-1]
        await projector.wait_for(last, timeout=10)
        final = await rebuild(projector)
    assert final.done
    assert final.eta_seconds == 0.0
    assert "rebuild progress" in capsys.readouterr().out


@pytest.mark.anyio
async def test_one_rebuild_at_a_time(tmp_path: Path) -> None:
    """A second rebuild, or a reset, while a rebuild runs is refused; the first completes."""
    projector = account_balances(tmp_path)
    started = anyio.Event()
    results: list[RebuildProgress] = []

    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        last = await write_bank(store, accounts=4, rounds=50)
        await projector.wait_for(last, timeout=10)

        async def first() -> None:
            results.append(
                await rebuild(
                    projector, progress=lambda p: started.set(), page_size=10, display=False
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            with pytest.raises(RebuildFailed, match="already running"):
                await rebuild(projector, display=False)
            with pytest.raises(ProjectionError):
                await projector.reset(0)
        await projector.wait_for(last, timeout=10)
    assert results[0].done
    assert projector.generation == 2


class SlowTailStore(MemoryStore):
    """A MemoryStore whose reads past the head take 0.3 s, as a store's idle poll can."""

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
    ) -> list[RecordedEvent]:
        """Read as MemoryStore does, after a delay when nothing is past ``after``."""
        if after >= await self.head():
            await anyio.sleep(0.3)
        return await super().read_all(after, limit, types=types, categories=categories)


@pytest.mark.anyio
async def test_rebuild_finishes_when_the_last_page_is_exactly_full(tmp_path: Path) -> None:
    """A rebuild of an idle log whose last page is exactly full completes (it once hung)."""
    projector = account_balances(tmp_path)
    async with SlowTailStore() as store, ProjectionEngine(store, [projector]):
        last = (await store.append("Account-1", [deposited(1) for _ in range(20)], 0)).version
        await projector.wait_for(last, timeout=10)
        # 20 events in pages of 10: the second page is full, so the subscription
        # is not yet live when it arrives; the empty read that would set it is slow.
        with anyio.fail_after(10):
            final = await rebuild(projector, page_size=10, display=False)
        assert (final.done, final.position) == (True, 20)
        assert [b.balance for b in await list_balances(projector)] == [20]


@pytest.mark.anyio
async def test_rebuild_of_an_empty_log_completes(tmp_path: Path) -> None:
    """A rebuild with nothing in the log swaps in an empty copy (it waited for an event)."""
    projector = account_balances(tmp_path)
    async with MemoryStore() as store, ProjectionEngine(store, [projector]):
        generation = projector.generation
        with anyio.fail_after(10):
            final = await rebuild(projector, display=False)
        assert (final.done, final.position, final.events) == (True, 0, 0)
        assert projector.generation == generation + 1
        await store.append("Account-1", [deposited(5)], 0)
        await projector.wait_for(1, timeout=10)
        assert [b.balance for b in await list_balances(projector)] == [5]
