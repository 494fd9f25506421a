"""Projectors across OS processes: SIGKILL mid-catch-up, and a second writer process."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest

from runtime._projection_engine import ProjectionEngine
from runtime._projection_sqlite_file import open_read_model
from runtime.examples.read_models import account_balances, get_balance, list_balances
from stores import Durability, SQLiteStore
from tests.projection_child import write_bank

CHILD = [sys.executable, "-m", "tests.projection_child"]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def checkpoint_of(directory: Path) -> int:
    """The checkpoint stored in the live account-balances read model."""
    conn = open_read_model(directory, "account_balances")
    try:
        row = conn.execute("SELECT position FROM _projection_checkpoint").fetchone()
        return 0 if row is None else int(row[0])
    finally:
        conn.close()


@pytest.mark.anyio
async def test_sigkill_mid_catch_up_applies_every_event_exactly_once(tmp_path: Path) -> None:
    """After SIGKILLs during catch-up the read model equals a fresh rebuild: no duplicates."""
    events_db = tmp_path / "events.db"
    live = tmp_path / "live"
    async with SQLiteStore(events_db, durability=Durability.NORMAL) as store:
        head = await write_bank(store, accounts=10, rounds=60, per_append=20)

    kills = 0
    for _ in range(3):
        async with await anyio.open_process(
            [*CHILD, "project", str(events_db), str(live)], cwd=ROOT
        ) as proc:
            assert proc.stdout is not None
            buffered = b""
            with anyio.fail_after(60):
                async for chunk in proc.stdout:
                    buffered += chunk
                    lines = buffered.split(b"\n")
                    positions = [int(x.split()[1]) for x in lines[:-1] if x.startswith(b"at ")]
                    start = positions[0] if positions else 0
                    # Kill once it has moved at least one batch past where it started.
                    if positions and positions[-1] >= start + 50:
                        break
            at_kill = positions[-1]
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        if at_kill < head:
            kills += 1
        assert checkpoint_of(live) <= head
    assert kills >= 1  # at least one kill landed mid-catch-up

    async with SQLiteStore(events_db) as store:
        projector = account_balances(live)
        fresh = account_balances(tmp_path / "fresh", name="fresh")
        async with ProjectionEngine(store, [projector, fresh]) as engine:
            await engine.wait_for(head, timeout=60)
            recovered = await list_balances(projector)
            assert recovered == await list_balances(fresh)
    # 1 open + 60 rounds * 20 deposits + 20 withdrawals: each applied exactly once.
    assert [b.events for b in recovered] == [1 + 60 * 20 + 20] * 10


@pytest.mark.anyio
async def test_events_from_another_process_reach_the_projector(tmp_path: Path) -> None:
    """A second process appending to the same SQLite file is seen by this process's projector."""
    events_db = tmp_path / "events.db"
    projector = account_balances(tmp_path / "models")
    async with SQLiteStore(events_db) as store, ProjectionEngine(store, [projector]) as engine:
        with anyio.fail_after(10):
            # Wait until it follows the live feed (there is no event to wait on).
            while not projector.statistics().live:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        with anyio.fail_after(60):
            result = await anyio.run_process([*CHILD, "write", str(events_db), "25"], cwd=ROOT)
        last = int(result.stdout.split()[-1])
        await projector.wait_for(last, timeout=30)
        balance = await get_balance(projector, "foreign")
        assert balance is not None
        assert (balance.balance, balance.events) == (25, 25)
        assert engine.bus.statistics().gaps >= 1
