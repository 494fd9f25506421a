"""SQLiteStore specifics: consumer transactions, locks held by others, closing, pragmas()."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.lowlevel
import pytest

from stores import (
    NewEvent,
    SQLiteStore,
    StoreClosed,
    StoreUnavailable,
)
from tests._store_helpers import ev


@pytest.mark.anyio
async def test_consumer_transaction_commits_or_rolls_back_with_its_checkpoint(
    tmp_path: Path,
) -> None:
    """Read-model rows and the checkpoint commit together, and roll back together."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        async with store.open_consumer_transaction("proj") as txn:
            assert isinstance(txn.connection, aiosqlite.Connection)
            await txn.connection.execute("CREATE TABLE rm (k TEXT)")
            await txn.connection.execute("INSERT INTO rm VALUES ('a')")
            await txn.set_checkpoint(5)

        async def fail_inside() -> None:
            async with store.open_consumer_transaction("proj") as txn:
                assert txn.checkpoint == 5
                await txn.connection.execute("INSERT INTO rm VALUES ('b')")
                await txn.set_checkpoint(9)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await fail_inside()
        assert await store.get_checkpoint("proj") == 5
        async with store.open_consumer_transaction("proj") as txn:
            rows = list(await txn.connection.execute_fetchall("SELECT k FROM rm"))
        assert [r[0] for r in rows] == ["a"]


@pytest.mark.anyio
async def test_reads_do_not_wait_behind_a_held_write_lock(tmp_path: Path) -> None:
    """While another connection holds the write lock, reads answer and the append waits."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path) as store:
        await store.append("Acc-1", [ev()], 0)
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.append, "Acc-1", [ev()], 1)
            await anyio.sleep(0.05)
            # If reads queued behind the blocked writer this would deadlock
            # until busy_timeout and the append would fail.
            assert await store.head() == 1
            assert len(await store.read_all()) == 1
            blocker.execute("ROLLBACK")
        blocker.close()
        assert await store.stream_version("Acc-1") == 2


@pytest.mark.anyio
async def test_lock_held_past_busy_timeout_raises_store_unavailable(tmp_path: Path) -> None:
    """A lock held past busy_timeout fails the append with StoreUnavailable, chained."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path, busy_timeout=0.2) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as info:
            await store.append("Acc-1", [ev()], 0)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert (await store.append("Acc-1", [ev()], 0)).version == 1


@pytest.mark.anyio
async def test_close_commits_pending_appends_then_refuses_calls(tmp_path: Path) -> None:
    """Closing waits for queued appends; then calls raise StoreClosed; close is idempotent."""
    path = tmp_path / "events.db"
    results: list[Any] = []
    async with anyio.create_task_group() as tg, SQLiteStore(path) as store:

        async def one(i: int) -> None:
            results.append(await store.append(f"Acc-{i}", [ev()], 0))

        for i in range(10):
            tg.start_soon(one, i)
        await anyio.lowlevel.checkpoint()
        assert store._writer is not None
        assert store._writer.queued == 10  # queued, not yet committed, as the block exits
    assert len(results) == 10
    await store.aclose()
    with pytest.raises(StoreClosed):
        await store.append("Acc-x", [ev()], 0)
    with pytest.raises(StoreClosed):
        await store.read_all()
    async with SQLiteStore(path) as reopened:
        assert await reopened.head() == 10


@pytest.mark.anyio
async def test_pragmas_reads_the_writer_connection_and_rejects_bad_names(tmp_path: Path) -> None:
    """pragmas() reports the writer's settings and refuses names that are not identifiers."""
    from stores import Durability, SQLiteStore

    async with SQLiteStore(tmp_path / "p.db", durability=Durability.NORMAL) as store:
        values = await store.pragmas("synchronous", "journal_mode")
        assert values == {"synchronous": 1, "journal_mode": "wal"}
        with pytest.raises(ValueError, match="not a pragma name"):
            await store.pragmas("synchronous; DROP TABLE events")
        # SQLite answers a pragma it does not know with no row: None, not a TypeError.
        assert await store.pragmas("no_such_pragma") == {"no_such_pragma": None}


@pytest.mark.anyio
async def test_read_bounds_past_64_bits_raise_value_error(tmp_path: Path) -> None:
    """A read bound SQLite cannot bind raises ValueError (not the driver's OverflowError)."""
    from stores import SQLiteStore

    async with SQLiteStore(tmp_path / "p.db") as store:
        await store.append("Acc-1", [NewEvent("T.A", {})], 0)
        with pytest.raises(ValueError, match="out of range"):
            await store.read_stream("Acc-1", 2**63)
        with pytest.raises(ValueError, match="out of range"):
            await store.read_all(2**63)
        assert [e.version for e in await store.read_stream("Acc-1")] == [1]


@pytest.mark.anyio
@pytest.mark.parametrize("last_step", ["set_checkpoint", "commit"])
async def test_store_closed_during_a_consumer_transaction(tmp_path: Path, last_step: str) -> None:
    """Closing the store under an open consumer transaction: its next step raises
    StoreClosed (not aiosqlite's ValueError) and nothing of it is committed."""
    from stores import SQLiteStore, StoreClosed

    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    await store.set_checkpoint("p", 1)

    async def closed_midway() -> None:
        async with store.open_consumer_transaction("p") as tx:
            await tx.connection.execute("CREATE TABLE model (x)")
            if last_step == "commit":
                await tx.set_checkpoint(2)
            await store.aclose()
            if last_step == "set_checkpoint":
                await tx.set_checkpoint(3)

    with pytest.raises(StoreClosed, match="consumer transaction"):
        await closed_midway()
    async with SQLiteStore(tmp_path / "c.db") as reopened:
        assert await reopened.get_checkpoint("p") == 1
        async with reopened.open_consumer_transaction("p") as tx:
            rows = await tx.connection.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE name = 'model'"
            )
            assert list(rows) == []
