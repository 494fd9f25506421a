"""Helpers for the projection tests, and a child process for the crash/multi-process ones.

Usage:

``python -m tests.projection_child project STORE DIRECTORY``
    Runs the account-balances projector over the SQLite store at STORE,
    in batches of 50, printing ``at POSITION`` (flushed) as it moves, until
    killed.

``python -m tests.projection_child write STORE COUNT``
    Appends COUNT deposits to ``Account-foreign`` and prints ``done LAST``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from runtime._projection_engine import ProjectionEngine
from runtime.examples.read_models import account_balances
from stores import ANY, EventStore, NewEvent, SQLiteStore


def opened(owner: str) -> NewEvent:
    """An ``Account.Opened`` event."""
    return NewEvent("Account.Opened", {"owner": owner})


def deposited(amount: int) -> NewEvent:
    """An ``Account.Deposited`` event."""
    return NewEvent("Account.Deposited", {"amount": amount})


def withdrawn(amount: int) -> NewEvent:
    """An ``Account.Withdrawn`` event."""
    return NewEvent("Account.Withdrawn", {"amount": amount})


async def write_bank(
    store: EventStore, accounts: int, rounds: int, *, per_append: int = 1, start: int = 0
) -> int:
    """Open ``accounts`` accounts (if ``start`` is 0) and deposit into each ``rounds`` times.

    Deposits are ``1 + round % 7`` cents; every third round also withdraws 1.
    Returns the last position written.
    """
    last = 0
    if start == 0:
        for a in range(accounts):
            last = (await store.append(f"Account-{a}", [opened(f"owner-{a}")], ANY)).positions[-1]
    for r in range(start, start + rounds):
        for a in range(accounts):
            events = [deposited(1 + r % 7) for _ in range(per_append)]
            if r % 3 == 2:
                events.append(withdrawn(1))
            last = (await store.append(f"Account-{a}", events, ANY)).positions[-1]
    return last


async def _project(store_path: str, directory: str) -> None:
    async with SQLiteStore(store_path) as store:
        projector = account_balances(Path(directory), batch_size=50)
        async with ProjectionEngine(store, [projector]):
            while True:
                print(f"at {projector.position}", flush=True)
                await anyio.sleep(0.005)


async def _write(store_path: str, count: int) -> None:
    async with SQLiteStore(store_path) as store:
        last = 0
        for _ in range(count):
            last = (await store.append("Account-foreign", [deposited(1)], ANY)).positions[-1]
        print(f"done {last}", flush=True)


def main(argv: list[str]) -> None:
    """Run the child command named in ``argv``."""
    command, *args = argv
    if command == "project":
        anyio.run(_project, args[0], args[1])
    elif command == "write":
        anyio.run(_write, args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
