"""Child processes for the runtime-on-PostgreSQL tests, and the read model they share.

Usage: ``python -m tests.pg_runtime_child MODE SCHEMA ...``

``deposit SCHEMA ACCOUNTS COUNT SEED``
    Runs a ``Runtime`` on a PostgresStore in SCHEMA, prints ``ready``, waits
    for a line on stdin, then sends COUNT deposits, all at once, to accounts
    ``0..ACCOUNTS-1`` (opened beforehand by the parent). Prints
    ``ok ACCOUNT AMOUNT`` for each acknowledged deposit and finally
    ``conflicts N`` (appends this process lost to another writer).

``project SCHEMA NAME BATCH``
    Runs the balances read model (:func:`balances_projector`) in SCHEMA with
    both the bus's and the store's poll intervals at 600 s, so only
    LISTEN/NOTIFY can tell it about other processes' commits. Prints
    ``ready``, then ``at POSITION`` whenever its position moves, until a line
    arrives on stdin (or it is killed); then prints ``notifications N``.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import anyio
import anyio.to_thread

from runtime import TransactionalStoreProjector
from stores import RecordedEvent
from stores._postgres_sql import quote_ident
from tests.pg import DSN

ACCOUNT_EVENTS = ("Account.Opened", "Account.Deposited", "Account.Withdrawn")

QUIET_POLL = 600.0
"""A poll interval far beyond any test's deadline: only a notification wakes a waiter."""


def tables(schema: str, name: str) -> tuple[str, str]:
    """The qualified (balances, applied) table names of read model ``name`` in ``schema``."""
    s = quote_ident(schema)
    return f"{s}.{quote_ident(name + '_balances')}", f"{s}.{quote_ident(name + '_applied')}"


async def create_tables(conn: Any, schema: str, name: str) -> None:
    """Create the read model's tables (``conn``: an asyncpg connection)."""
    balances, applied = tables(schema, name)
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {balances} (account text PRIMARY KEY, balance bigint NOT NULL)"
    )
    # No unique key on purpose: an event applied twice shows up as two rows.
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {applied} (position bigint NOT NULL)")


def balances_projector(schema: str, name: str, **options: Any) -> TransactionalStoreProjector:
    """Account balances kept in the store's own PostgreSQL schema, exactly once.

    Each event adds its amount to the account's row and logs its position in
    ``{name}_applied``, inside the projector's consumer transaction.
    """
    balances, applied = tables(schema, name)
    upsert = (
        f"INSERT INTO {balances} AS b (account, balance) VALUES ($1, $2)"
        f" ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance"
    )
    log = f"INSERT INTO {applied} (position) VALUES ($1)"

    async def handler(conn: Any, event: RecordedEvent) -> None:
        amount = int(event.data.get("amount", 0))
        delta = -amount if event.type == "Account.Withdrawn" else amount
        await conn.execute(upsert, event.stream.partition("-")[2], delta)
        await conn.execute(log, event.position)

    return TransactionalStoreProjector(name, handler, types=ACCOUNT_EVENTS, **options)


async def read_model(conn: Any, schema: str, name: str) -> tuple[dict[str, int], list[int]]:
    """The read model's balances by account and its applied positions (sorted, repeats kept)."""
    balances, applied = tables(schema, name)
    rows = await conn.fetch(f"SELECT account, balance FROM {balances}")
    positions = await conn.fetch(f"SELECT position FROM {applied} ORDER BY position")
    return {r[0]: int(r[1]) for r in rows}, [int(r[0]) for r in positions]


async def _deposit(schema: str, accounts: int, count: int, seed: int) -> None:
    from aggregates.examples.bank import Account, Deposit
    from runtime import Address, ConflictRetriesExhausted, Runtime
    from stores import PostgresStore

    rng = random.Random(seed)
    store = PostgresStore(DSN, schema=schema, pool_max_size=2)
    async with Runtime(aggregates=[Account], store=store, max_retries=100) as rt:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

        async def one() -> None:
            account, amount = rng.randrange(accounts), rng.randrange(1, 100)
            try:
                await rt.ask(Address("Account", str(account)), Deposit(amount=amount))
            except ConflictRetriesExhausted:
                print("gave-up", account, amount, flush=True)
                return
            print("ok", account, amount, flush=True)

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        print("conflicts", rt.statistics().conflicts, flush=True)


async def _project(schema: str, name: str, batch: int) -> None:
    from runtime import ProjectionEngine
    from stores import PostgresStore

    projector = balances_projector(schema, name, batch_size=batch)
    async with PostgresStore(DSN, schema=schema, poll_interval=QUIET_POLL) as store:
        async with ProjectionEngine(store, [projector], poll_interval=QUIET_POLL):
            watcher = store._watcher
            assert watcher is not None
            # Ready once the bus's head waiter holds its LISTEN connection.
            with anyio.fail_after(10):
                while not watcher._listening.is_set():  # noqa: ASYNC110 - no event is exposed
                    await anyio.sleep(0.01)
            print("ready", flush=True)
            stop = anyio.Event()

            async def wait_for_stdin() -> None:
                await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                stop.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_stdin)
                last = -1
                while not stop.is_set():
                    if projector.position != last:
                        last = projector.position
                        print(f"at {last}", flush=True)
                    with anyio.move_on_after(0.005):
                        await stop.wait()
        print(f"notifications {watcher.notifications}", flush=True)


def main(argv: list[str]) -> None:
    """Run the child mode named in ``argv``."""
    mode, schema, *args = argv
    if mode == "deposit":
        anyio.run(_deposit, schema, int(args[0]), int(args[1]), int(args[2]))
    elif mode == "project":
        anyio.run(_project, schema, args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
