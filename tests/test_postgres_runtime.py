"""The runtime on PostgreSQL: several runtime processes on one schema, and read
models in the same database applied exactly once (consumer transactions)."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from aggregates.examples.bank import Account, GetBalance, Open
from runtime import Address, ProjectionEngine, Runtime
from stores import ANY, NewEvent, PostgresStore, RecordedEvent
from tests import pg
from tests.pg_runtime_child import balances_projector, create_tables, read_model
from tests.runtime_child import tally_deposits

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 5


def _child(*args: str) -> subprocess.Popen[str]:
    """Start ``python -m tests.pg_runtime_child ARGS`` with piped stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pg_runtime_child", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(child: subprocess.Popen[str]) -> None:
    """Read the child's stdout up to its ``ready`` line (fails if it exits first)."""
    assert child.stdout is not None
    while (line := child.stdout.readline()) and line.strip() != "ready":
        pass
    assert line, f"child exited before it was ready: {child.communicate(timeout=10)[1]}"


async def _account_positions(store: PostgresStore) -> list[int]:
    """Positions of every event in the log (all of them are account events here)."""
    return [e.position async for e in store.iter_all()]


async def _wait_checkpoint(store: PostgresStore, name: str, position: int) -> None:
    """Poll the projector's durable checkpoint until it reaches ``position``."""
    with anyio.fail_after(30):
        while await store.get_checkpoint(name) < position:  # noqa: ASYNC110 - another process moves it
            await anyio.sleep(0.05)


@pytest.mark.slow
async def test_two_runtime_processes_lose_no_update_and_a_third_projects_exactly_once() -> None:
    """Two runtime processes deposit into the same accounts on one schema: balances equal
    the acknowledged deposits; a projector process woken only by NOTIFY converges to a
    read model equal to a fresh rebuild, with every event applied once."""
    schema = pg.new_schema()
    setup = await pg.new_store(schema=schema)  # skips here when there is no server
    children: list[subprocess.Popen[str]] = []
    try:
        async with setup, setup.open_consumer_transaction("setup") as tx:
            for name in ("live", "rebuilt"):
                await create_tables(tx.connection, schema, name)
        async with Runtime(aggregates=[Account], store=await pg.new_store(schema=schema)) as rt:
            for i in range(ACCOUNTS):
                await rt.ask(Address("Account", str(i)), Open(owner=f"owner-{i}"))

        projector = _child("project", schema, "live", "25")
        children.append(projector)
        _wait_ready(projector)
        depositors = [_child("deposit", schema, str(ACCOUNTS), "300", str(s)) for s in (1, 2)]
        children += depositors
        for child in depositors:
            _wait_ready(child)
        for child in depositors:  # both start depositing together
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        expected, acked, conflicts = tally_deposits(depositors)
        assert acked == 600  # max_retries=100: every deposit got through
        assert conflicts > 0  # the processes really raced on the same streams

        async with await pg.new_store(schema=schema) as store:
            head = await store.head()
            deposits = [e async for e in store.iter_all() if e.type == "Account.Deposited"]
            assert len(deposits) == acked  # nothing lost, nothing written twice
            await _wait_checkpoint(store, "live", head)
            assert projector.stdin is not None
            projector.stdin.write("stop\n")
            projector.stdin.flush()
            out, err = projector.communicate(timeout=30)
            assert projector.returncode == 0, err
            notified = int(out.split("notifications")[1])
            assert notified > 0  # the only way it heard of the writers' commits

            async with store.open_consumer_transaction("check") as tx:
                live, live_applied = await read_model(tx.connection, schema, "live")
            positions = await _account_positions(store)
            assert live_applied == positions  # each event applied exactly once
            assert live == {a: expected[a] for a in map(str, range(ACCOUNTS))}

            rebuilt = balances_projector(schema, "rebuilt")
            async with ProjectionEngine(store, [rebuilt]):
                await rebuilt.wait_for(head, timeout=30)
            async with store.open_consumer_transaction("check") as tx:
                assert await read_model(tx.connection, schema, "rebuilt") == (live, positions)

        async with Runtime(aggregates=[Account], store=await pg.new_store(schema=schema)) as rt:
            for account in map(str, range(ACCOUNTS)):
                balance = (await rt.ask(Address("Account", account), GetBalance())).value
                assert balance == expected[account], account
    finally:
        for child in children:
            child.kill()
            child.communicate()
        await pg.drop_schema(schema)


async def test_transactional_projector_rolls_back_a_failed_batch_on_postgres() -> None:
    """A handler failing mid-batch rolls back the batch's read-model writes with it, so
    the retry applies each event exactly once (no double-apply of the prefix)."""
    async with pg.opened_store() as store:
        async with store.open_consumer_transaction("setup") as tx:
            await create_tables(tx.connection, store.schema, "rb")
        for i in range(10):
            await store.append("Account-1", [NewEvent("Account.Deposited", {"amount": i})], ANY)
        projector = balances_projector(store.schema, "rb", retry_backoff=0, batch_size=100)
        inner = projector.handler
        calls: list[int] = []

        async def fail_once_at_6(conn: Any, event: RecordedEvent) -> None:
            calls.append(event.position)
            await inner(conn, event)  # written, then rolled back with the batch
            if event.position == 6 and calls.count(6) == 1:
                raise RuntimeError("transient")

        projector.handler = fail_once_at_6
        async with ProjectionEngine(store, [projector]):
            await projector.wait_for(10, timeout=10)
        assert calls.count(3) == 2  # the prefix really ran twice
        async with store.open_consumer_transaction("check") as tx:
            balances, applied = await read_model(tx.connection, store.schema, "rb")
        assert applied == list(range(1, 11))
        assert balances == {"1": sum(range(10))}
        assert await store.get_checkpoint("rb") == 10


@pytest.mark.slow
async def test_sigkilled_projector_process_resumes_without_double_apply() -> None:
    """SIGKILL a projector process mid-catch-up: its read model matches its checkpoint
    exactly, and a restarted projector finishes with every event applied once."""
    async with pg.opened_store() as store:
        schema = store.schema
        async with store.open_consumer_transaction("setup") as tx:
            await create_tables(tx.connection, schema, "crash")
        for a in range(20):
            events = [NewEvent("Account.Deposited", {"amount": 1 + i % 7}) for i in range(100)]
            await store.append(f"Account-{a}", events, 0)
        head = await store.head()
        child = _child("project", schema, "crash", "10")
        try:
            assert child.stdout is not None
            while (line := child.stdout.readline()) and not (
                line.startswith("at ") and int(line.split()[1]) > 0
            ):
                pass
            assert line, child.communicate(timeout=10)[1]
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
        finally:
            child.kill()
        checkpoint = await store.get_checkpoint("crash")
        assert 0 < checkpoint < head  # killed mid-way
        async with store.open_consumer_transaction("check") as tx:
            balances, applied = await read_model(tx.connection, schema, "crash")
        assert applied == list(range(1, checkpoint + 1))  # exactly what the checkpoint says
        by_account = collections.Counter[str]()
        for event in await store.read_all(0, checkpoint):
            by_account[event.stream.partition("-")[2]] += event.data["amount"]
        assert balances == dict(by_account)

        projector = balances_projector(schema, "crash")
        async with ProjectionEngine(store, [projector]):
            await projector.wait_for(head, timeout=30)
        async with store.open_consumer_transaction("check") as tx:
            balances, applied = await read_model(tx.connection, schema, "crash")
        assert applied == list(range(1, head + 1))
        assert sum(balances.values()) == sum(20 * (1 + i % 7) for i in range(100))


async def test_two_copies_of_a_transactional_projector_apply_each_event_once() -> None:
    """Two copies of one TransactionalStoreProjector on separate connections (as in two
    processes) share its checkpoint row lock: every event is applied once, not twice."""
    async with pg.opened_store() as store:
        schema = store.schema
        async with store.open_consumer_transaction("setup") as tx:
            await create_tables(tx.connection, schema, "twin")
        for i in range(100):
            await store.append(
                f"Account-{i % 5}", [NewEvent("Account.Deposited", {"amount": 1})], ANY
            )
        first = balances_projector(schema, "twin", batch_size=10)
        second = balances_projector(schema, "twin", batch_size=10)
        other = await pg.new_store(schema=schema)
        async with other, ProjectionEngine(store, [first]), ProjectionEngine(other, [second]):
            for i in range(100):  # and live, while both follow the log
                await store.append(
                    f"Account-{i % 5}", [NewEvent("Account.Deposited", {"amount": 1})], ANY
                )
            await first.wait_for(200, timeout=30)
            await second.wait_for(200, timeout=30)
        async with store.open_consumer_transaction("check") as tx:
            balances, applied = await read_model(tx.connection, schema, "twin")
        assert applied == list(range(1, 201))
        assert balances == {str(a): 40 for a in range(5)}
