"""The event loop: the suite runs on the one asked for, and the runtime runs on uvloop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import anyio
import pytest

from aggregates.examples.bank import Account, Deposit, GetBalance, Open
from runtime import Address, Runtime
from stores import SQLiteStore

uvloop = pytest.importorskip("uvloop")


@pytest.mark.anyio
async def test_async_tests_run_on_the_loop_asked_for() -> None:
    """ACTORSOURCING_TEST_LOOP=uvloop puts the async tests on uvloop; else the standard loop."""
    loop = asyncio.get_running_loop()
    on_uvloop = isinstance(loop, uvloop.Loop)
    assert on_uvloop == (os.environ.get("ACTORSOURCING_TEST_LOOP") == "uvloop")


def test_runtime_on_uvloop_with_the_writer_process(tmp_path: Path) -> None:
    """Many callers' asks on uvloop through SQLite's writer process all land, balances add up."""
    db = tmp_path / "events.db"
    accounts = [Address("Account", str(i)) for i in range(50)]

    async def write() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        store = SQLiteStore(db, writer="process")
        async with Runtime(aggregates=[Account], store=store) as rt:
            for acc in accounts:
                await rt.ask(acc, Open(owner="x"))

            async def caller(acc: Address) -> None:
                for _ in range(20):
                    await rt.ask(acc, Deposit(amount=1))

            async with anyio.create_task_group() as tg:
                for acc in accounts:
                    tg.start_soon(caller, acc)
            assert rt.store.statistics().batches > 0

    async def read() -> list[int]:
        async with Runtime(aggregates=[Account], path=db) as rt:
            return [(await rt.ask(acc, GetBalance())).value for acc in accounts]

    anyio.run(write, backend="asyncio", backend_options={"use_uvloop": True})
    assert anyio.run(read, backend="asyncio") == [20] * len(accounts)
