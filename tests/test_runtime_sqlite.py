"""The runtime on SQLite: restarts, several processes on one file, and SIGKILL."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aggregates.examples.bank import Account, Deposit, GetBalance, Open
from runtime import Address, Runtime
from stores import SQLiteStore
from tests.runtime_child import Append, Dump, Ledger, Post, SnapSeq, tally_deposits

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


async def test_command_id_survives_restart(tmp_path: Path) -> None:
    """After reopening on the same file, a repeated command id returns the original outcome."""
    db = tmp_path / "events.db"
    acc = Address("Account", "1")
    async with Runtime(aggregates=[Account], path=db) as rt:
        await rt.ask(acc, Open(owner="ann"))
        first = await rt.ask(acc, Deposit(amount=7), command_id="dep-7")
    async with Runtime(aggregates=[Account], path=db) as rt:
        again = await rt.ask(acc, Deposit(amount=7), command_id="dep-7")
        assert again.duplicate
        assert (again.version, again.positions) == (first.version, first.positions)
        assert [(e.type, e.data, e.metadata, e.event_id) for e in again.events] == [
            (e.type, e.data, e.metadata, e.event_id) for e in first.events
        ]
        assert await rt.store.head() == 2
        assert (await rt.ask(acc, GetBalance())).value == 7


async def test_snapshot_and_state_survive_restart(tmp_path: Path) -> None:
    """State rebuilt after a restart (from a snapshot plus the tail) equals the state before."""
    db = tmp_path / "events.db"
    seq = Address("SnapSeq", "s")
    async with Runtime(aggregates=[SnapSeq], path=db) as rt:
        for n in range(10):
            rt.tell(seq, Append(n=n))
        before = (await rt.ask(seq, Dump())).value
    async with SQLiteStore(db) as store:
        snap = await store.load_snapshot("SnapSeq-s")
        assert snap is not None
        assert snap.version == 9
    async with Runtime(aggregates=[SnapSeq], path=db) as rt:
        assert (await rt.ask(seq, Dump())).value == before == {"items": list(range(10)), "blobs": 0}


async def test_activation_from_a_snapshot_is_one_read(tmp_path: Path) -> None:
    """Activating from a snapshot plus its tail costs ONE query on SQLite (snapshot and events
    together), and the state equals the one before."""
    db = tmp_path / "events.db"
    seq = Address("SnapSeq", "s")
    async with Runtime(aggregates=[SnapSeq], path=db) as rt:
        for n in range(11):
            await rt.ask(seq, Append(n=n))
        before = (await rt.ask(seq, Dump())).value
    store = SQLiteStore(db)
    queries: list[str] = []
    fetch = store._fetch

    async def counted(sql: str, params: Sequence[Any]) -> list[Any]:
        queries.append(sql)
        return await fetch(sql, params)

    store._fetch = counted  # type: ignore[method-assign]
    async with Runtime(aggregates=[SnapSeq], store=store) as rt:
        queries.clear()
        assert (await rt.ask(seq, Dump())).value == before
        assert rt.statistics().activations == 1
    assert len(queries) == 1, queries
    assert "snapshots" in queries[0]
    assert "events" in queries[0]


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
async def test_two_processes_on_one_file_lose_no_update(tmp_path: Path) -> None:
    """Two runtime processes depositing into the same accounts: balances equal acked sums."""
    db = str(tmp_path / "events.db")
    async with SQLiteStore(db):
        pass  # create the schema once, before both children race to
    children = [_child("deposit", db, "5", "300", str(seed)) for seed in (1, 2)]
    try:
        await _run_depositors(tmp_path, children, db)
    finally:
        for child in children:
            child.kill()
            child.__exit__(None, None, None)


async def _run_depositors(tmp_path: Path, children: list[subprocess.Popen[str]], db: str) -> None:
    for child in children:
        assert child.stdout is not None
        while (line := child.stdout.readline()) and line.strip() != "ready":
            pass
        assert line, "child exited before it was ready"
    (tmp_path / "events.db.go").touch()  # both start depositing together
    expected, acked, conflicts = tally_deposits(children)
    assert acked > 500  # nearly all 600 deposits got through despite the conflicts
    assert conflicts > 0  # the two processes really did write to the same streams at once
    async with Runtime(aggregates=[Account], path=db) as rt:
        for account in map(str, range(5)):
            balance = (await rt.ask(Address("Account", account), GetBalance())).value
            assert balance == expected[account], account
        assert rt.store.statistics().events == 0  # the parent wrote nothing


@pytest.mark.slow
async def test_sigkill_under_load_loses_no_acknowledged_command(tmp_path: Path) -> None:
    """SIGKILL mid-load, then restart: every acked command's events are there, none partial."""
    db = str(tmp_path / "events.db")
    acked: list[str] = []
    with _child("post", db, "k") as child:
        assert child.stdout is not None
        assert child.stderr is not None
        try:
            assert child.stdout.readline().strip() == "ready"
            while len(acked) < 300:
                line = child.stdout.readline()
                assert line, child.stderr.read()
                acked.append(line.split()[1])
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        rest = child.stdout.read()
    # Lines already written before the kill are acknowledged too.
    acked += [line.split()[1] for line in rest.splitlines() if line.startswith("ok ")]
    async with Runtime(aggregates=[Ledger], path=db) as rt:
        store = rt.store
        parts: collections.Counter[str] = collections.Counter()
        async for event in store.iter_all():
            parts[event.metadata["command_id"]] += 1
        assert all(count == 3 for count in parts.values())  # no command half-recorded
        for cid in acked:
            record = await store.find_command(cid)
            assert record is not None, cid
            assert len(record.positions) == 3, cid
        # A replayed acked command is answered from the log, not run again.
        k = int(acked[0].split("-")[1])
        out = await rt.ask(Address("Ledger", str(k % 50)), Post(amount=k), command_id=acked[0])
        assert out.duplicate
        assert len(out.events) == 3
        total = 0
        for i in range(50):
            total += (await rt.load(Address("Ledger", str(i)))).total  # type: ignore[attr-defined]
        assert total == 3 * sum(int(cid.split("-")[1]) for cid in parts)  # 3 parts each
