"""Seeding a bank log fast through the store's public API (set-up, not measured).

Workers each own a slice of the accounts and append ``chunk`` events per
``store.append`` call (an ``Account.Opened`` first, then deposits), with the
expected version they track, so the store's group commit packs many calls
(thousands of events) into one transaction. Accounts advance in rounds, so
the log interleaves streams the way a live system's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from bench._context import Context

__all__ = ["SeededLog", "deposit_amount", "seed_bank_log"]


def deposit_amount(position_in_stream: int) -> int:
    """The amount of a stream's n-th deposit (varied, so a wrong fold shows in the sum)."""
    return 1 + position_in_stream % 97


@dataclass(frozen=True, slots=True)
class SeededLog:
    """What :func:`seed_bank_log` wrote.

    Attributes:
        events: Events in the log.
        accounts: Streams (``Account-seed-<i>``), each opened first.
        deposits: Deposit events.
        total: Sum of all deposit amounts.
        appends: ``store.append`` calls made.
        seconds: Wall time of the seeding.
    """

    events: int
    accounts: int
    deposits: int
    total: int
    appends: int
    seconds: float


def _plan(events: int, accounts: int) -> list[int]:
    """Events per account: ``events`` split over ``accounts`` (each gets at least 1)."""
    accounts = min(accounts, events)
    return [events // accounts + (i < events % accounts) for i in range(accounts)]


async def seed_bank_log(
    store: Any,
    ctx: Context,
    *,
    events: int,
    accounts: int,
    chunk: int = 50,
    workers: int = 100,
    label: str = "seed log",
) -> SeededLog:
    """Append ``events`` bank events over ``accounts`` streams to an open store.

    Args:
        store: An open event store.
        ctx: The harness context (progress).
        events: How many events in all (opens included).
        accounts: How many account streams.
        chunk: Events per ``append`` call.
        workers: Concurrent appenders (their calls group-commit together).
        label: Progress label.
    """
    from bench._measure import now
    from stores import NewEvent

    per_account = _plan(events, accounts)
    workers = min(workers, len(per_account))
    task = ctx.progress.task(label, events)
    totals = {"total": 0, "deposits": 0, "appends": 0}

    async def worker(j: int) -> None:
        mine = range(j, len(per_account), workers)
        written = dict.fromkeys(mine, 0)
        while written:
            for i in list(written):
                done = written[i]
                n = min(chunk, per_account[i] - done)
                batch = []
                for k in range(done, done + n):
                    if k == 0:
                        batch.append(NewEvent("Account.Opened", {"owner": f"owner-{i}"}))
                    else:
                        amount = deposit_amount(k)
                        totals["total"] += amount
                        batch.append(NewEvent("Account.Deposited", {"amount": amount}))
                await store.append(f"Account-seed-{i}", batch, done)
                totals["deposits"] += n - (done == 0)
                totals["appends"] += 1
                task.advance(n)
                if done + n >= per_account[i]:
                    del written[i]
                else:
                    written[i] = done + n

    t0 = now()
    async with anyio.create_task_group() as tg:
        for j in range(workers):
            tg.start_soon(worker, j)
    seconds = now() - t0
    task.done()
    return SeededLog(
        events=sum(per_account),
        accounts=len(per_account),
        deposits=totals["deposits"],
        total=totals["total"],
        appends=totals["appends"],
        seconds=seconds,
    )
