"""Test aggregates for the runtime tests, and a child process that drives a runtime.

Run as ``python -m tests.runtime_child MODE DB ...``:

* ``deposit DB ACCOUNTS COUNT SEED``: deposit into ``ACCOUNTS`` shared accounts
  ``COUNT`` times; print ``ok ACCOUNT AMOUNT`` for each acknowledged deposit.
* ``post DB PREFIX``: post 3-event entries with command ids until killed;
  print ``ok COMMAND_ID`` after each acknowledgement (flushed at once).
"""

from __future__ import annotations

import collections
import random
import sys
from collections.abc import Callable
from typing import Any

from aggregates import Aggregate, Command, Event, Reply, applies, handles


class Append(Command):
    """Append a number to the sequence."""

    n: int


class Dump(Command):
    """A query: reply with the whole state."""


class Context(Command):
    """A query: reply with the structlog context variables bound during the turn."""


class Explode(Command):
    """Raise from the handler."""


class BadResult(Command):
    """Return something that is not events."""


class Unregistered(Command):
    """Return an event type the aggregate does not apply."""


class Unencodable(Command):
    """Return an event whose payload JSON cannot encode."""


class Appended(Event, name="Seq.Appended"):
    """A number was appended."""

    n: int


class Stray(Event, name="Seq.Stray"):
    """An event no aggregate applies (so it is not registered)."""


class Blob(Event, name="Seq.Blob"):
    """An event carrying an arbitrary payload."""

    payload: Any


BUGGY = {"apply": False}
"""Flip ``BUGGY["apply"]`` to make ``Seq``'s applier fail (a simulated bug)."""


class Seq(Aggregate, category="Seq"):
    """Records the numbers it is sent, in order."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.blobs = 0

    @handles
    def append(self, cmd: Append) -> Event:
        return Appended(n=cmd.n)

    @handles
    def dump(self, cmd: Dump) -> Reply:
        return Reply({"items": list(self.items), "blobs": self.blobs})

    @handles
    def context(self, cmd: Context) -> Reply:
        import structlog

        return Reply(structlog.contextvars.get_contextvars())

    @handles
    def explode(self, cmd: Explode) -> None:
        raise RuntimeError("boom")

    @handles
    def bad_result(self, cmd: BadResult) -> Any:
        return 5

    @handles
    def unregistered(self, cmd: Unregistered) -> Event:
        return Stray()

    @handles
    def unencodable(self, cmd: Unencodable) -> Event:
        return Blob(payload=object())

    @applies
    def _appended(self, e: Appended) -> None:
        if BUGGY["apply"]:
            raise ValueError("applier bug")
        self.items.append(e.n)

    @applies
    def _blob(self, e: Blob) -> None:
        self.blobs += 1


class SnapSeq(Seq, category="SnapSeq"):
    """``Seq`` with a snapshot every 3 events."""

    snapshot_every = 3


class Post(Command):
    """Post an entry split in ``parts`` events."""

    amount: int
    parts: int = 3


class Posted(Event, name="Ledger.Posted"):
    """One part of an entry."""

    amount: int
    part: int
    parts: int


class Ledger(Aggregate, category="Ledger"):
    """Sums posted amounts."""

    def __init__(self) -> None:
        self.total = 0

    @handles
    def post(self, cmd: Post) -> list[Event]:
        return [Posted(amount=cmd.amount, part=i, parts=cmd.parts) for i in range(cmd.parts)]

    @applies
    def _posted(self, e: Posted) -> None:
        self.total += e.amount


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (fails after ``limit`` seconds)."""
    import anyio

    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - polls state the runtime exposes no event for
            await anyio.sleep(0.001)


async def _deposit(db: str, accounts: int, count: int, seed: int) -> None:
    import anyio

    from aggregates.examples.bank import Account, Deposit, Open
    from runtime import Address, ConflictRetriesExhausted, Runtime
    from stores import SQLiteStore

    rng = random.Random(seed)
    async with Runtime(aggregates=[Account], store=SQLiteStore(db), max_retries=50) as rt:
        for i in range(accounts):
            try:
                await rt.ask(Address("Account", str(i)), Open(owner="o"), command_id=f"open-{i}")
            except Exception as exc:  # the other process may have opened it first
                print("open-failed", i, repr(exc), flush=True)

        print("ready", flush=True)
        go = anyio.Path(db + ".go")
        while not await go.exists():  # noqa: ASYNC110 - waits for a file the parent creates
            await anyio.sleep(0.01)

        async def one(k: int) -> None:
            account = rng.randrange(accounts)
            amount = rng.randrange(1, 100)
            try:
                await rt.ask(Address("Account", str(account)), Deposit(amount=amount))
            except ConflictRetriesExhausted:
                print("gave-up", account, amount, flush=True)
                return
            print("ok", account, amount, flush=True)

        async with anyio.create_task_group() as tg:
            for k in range(count):
                tg.start_soon(one, k)
        print("conflicts", rt.statistics().conflicts, flush=True)


async def _post(db: str, prefix: str) -> None:
    import anyio

    from runtime import Address, Runtime

    async with Runtime(aggregates=[Ledger], path=db) as rt:
        counter = iter(range(10**9))

        async def worker(w: int) -> None:
            while True:
                k = next(counter)
                cid = f"{prefix}-{k}"
                await rt.ask(Address("Ledger", str(k % 50)), Post(amount=k), command_id=cid)
                sys.stdout.write(f"ok {cid}\n")
                sys.stdout.flush()

        print("ready", flush=True)
        async with anyio.create_task_group() as tg:
            for w in range(20):
                tg.start_soon(worker, w)


def tally_deposits(children: list[Any]) -> tuple[collections.Counter[str], int, int]:
    """Wait for depositor children; sum their "ok ACCOUNT AMOUNT" and "conflicts N" lines.

    Returns:
        The acknowledged amount per account, the number of acknowledged
        deposits, and the conflicts the children retried.
    """
    expected: collections.Counter[str] = collections.Counter()
    acked = conflicts = 0
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        for line in out.splitlines():
            word, *rest = line.split()
            if word == "ok":
                expected[rest[0]] += int(rest[1])
                acked += 1
            elif word == "conflicts":
                conflicts += int(rest[0])
    return expected, acked, conflicts


def main(argv: list[str]) -> None:
    """Entry point of the child process."""
    import anyio

    mode, db = argv[0], argv[1]
    if mode == "deposit":
        anyio.run(_deposit, db, int(argv[2]), int(argv[3]), int(argv[4]))
    elif mode == "post":
        anyio.run(_post, db, argv[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
