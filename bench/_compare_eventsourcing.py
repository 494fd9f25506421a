"""``--compare eventsourcing``: the same workloads on the ``eventsourcing`` library, same run.

Same machine, same disk (the scratch directory), same durability: its SQLite
recorder runs WAL and sets no ``synchronous`` pragma, so SQLite's default FULL
applies -- checked on its own connection each run (the run fails otherwise).
Their side uses their documented API: ``repository.get`` -> command -> ``save``
per command; the aggregate cache at its best settings as a second row; the
snapshot store with ``take_snapshot``; a ``ProcessApplication`` follower.
Ratios are ours / theirs within each run (for ms, below 1 means we are faster).
Cold loads: a fresh application (theirs) or runtime (ours) loads one other,
one-event account first, untimed, on both sides alike; the figure is the
load of the account itself.

The follower row: theirs is a ``DepositCounter`` process application pulling
the first N notifications of the bank log (timed: ``pull_and_process``; it
writes a tracking record per event, exactly once). Ours is a
``SQLiteProjector`` counting deposits over a log of the same N events and the
same mix (the accounts' openings, then deposits), seeded through
``store.append``; it sees every event type, like theirs, and commits its
count and checkpoint in one transaction per batch (exactly once). Timed from
the ``ProjectionEngine`` having started (read model open) to ``wait_for(N)``;
building either follower is not timed. Not like for like on durability: our
read-model file runs WAL at ``synchronous=NORMAL`` (survives a process
crash; a rebuildable read model) and commits once per batch of up to 1,000
events, while theirs commits each event at SQLite's default FULL (an fsync
per event) -- most of the gap is that.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from bench._context import Context, Workload, new_store
from bench._measure import NotAvailable, RunOutput, Sample, now
from bench.workloads import _rt, activate, write
from bench.workloads._log import seed_bank_log

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {
        "accounts": 10,
        "deposits_each": 2,
        "events": 200,
        "after_snapshot": 9,
        "follower_events": 25,
    },
    "quick": {
        "accounts": 1_000,
        "deposits_each": 20,
        "events": 10_000,
        "after_snapshot": 99,
        "follower_events": 5_000,
    },
    "full": {
        "accounts": 1_000,
        "deposits_each": 20,
        "events": 10_000,
        "after_snapshot": 99,
        "follower_events": 21_000,
    },
}
# Their aggregate cache at its best for one writing process: every account
# fits; no fast-forward read per get (the cache is updated on save instead);
# no deepcopy per get (a deposit cannot corrupt a cached account).
BEST_CACHE = {
    "AGGREGATE_CACHE_MAXSIZE": "",  # set to the number of accounts
    "AGGREGATE_CACHE_FASTFORWARD": "n",
    "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
}


def _env(path: Path, **extra: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), **extra}


def _their_synchronous(app: Any) -> int:
    """``PRAGMA synchronous`` on the library's own connection (2 = FULL)."""
    with app.recorder.datastore.get_connection(commit=False) as conn:
        return int(conn._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0])


def _theirs_writes(ctx: Context, path: Path, sizes: dict[str, Any], env: dict[str, str]) -> Any:
    """Open accounts, then deposits round-robin (timed); (commands/s, bank app)."""
    from bench._eventsourcing_domain import Bank

    bank = Bank(env=_env(path, **env))
    if (sync := _their_synchronous(bank)) != 2:
        raise RuntimeError(f"eventsourcing runs synchronous={sync}, not FULL: not like for like")
    ids = [bank.open("bench") for _ in range(sizes["accounts"])]
    total = sizes["accounts"] * sizes["deposits_each"]
    task = ctx.progress.task(f"theirs deposits{' (cache)' if env else ''}", total)
    t0 = now()
    for _ in range(sizes["deposits_each"]):
        for account_id in ids:
            bank.deposit(account_id, write.AMOUNT)
            task.advance()
    elapsed = now() - t0
    task.done()
    if sum(bank.balance(i) for i in ids) != write.AMOUNT * total:
        raise RuntimeError("eventsourcing balances do not add up")
    return total / elapsed, bank


def _theirs_follower(ctx: Context, bank: Any, path: Path, sizes: dict[str, Any]) -> float:
    """A DepositCounter catching up over the first N notifications; events/s."""
    from bench._eventsourcing_domain import DepositCounter

    stop = sizes["follower_events"]
    counter = DepositCounter(env=_env(path))
    counter.follow(bank.name, bank.notification_log)
    t0 = now()
    counter.pull_and_process(bank.name, stop=stop)
    elapsed = now() - t0
    expected = min(stop, sizes["accounts"] * (1 + sizes["deposits_each"])) - sizes["accounts"]
    if counter.count != expected:
        raise RuntimeError(f"their follower counted {counter.count}, expected {expected}")
    counter.close()
    return float(stop / elapsed)


def _theirs_cold(path: Path, n: int, tail: int) -> tuple[float, float]:
    """Cold load (ms) of an n-event account by a fresh app: without, then with a snapshot."""
    from bench._eventsourcing_domain import Bank, BankAccount, BankWithSnapshots

    out = []
    for cls, snapshot_at in ((Bank, None), (BankWithSnapshots, n - tail)):
        db = path.with_name(f"{path.stem}-{cls.__name__}.db")
        seeding = cls(env=_env(db))
        account = BankAccount("bench")
        for _ in range(n - 1):
            account.deposit(1)
        warm = BankAccount("warm")
        seeding.save(account, warm)
        if snapshot_at is not None:
            seeding.take_snapshot(account.id, version=snapshot_at)
        seeding.close()
        fresh = cls(env=_env(db))
        # As on our side (activate.cold_ask): one untimed load of another
        # account first, so the figure is the account's load, not the app's
        # first-query costs.
        fresh.repository.get(warm.id)
        t0 = now()
        loaded: BankAccount = fresh.repository.get(account.id)
        out.append((now() - t0) * 1000)
        if loaded.balance != n - 1:
            raise RuntimeError("eventsourcing cold load returned a wrong balance")
        fresh.close()
    return out[0], out[1]


_COUNTER_SCHEMA = (
    "CREATE TABLE deposit_count (n INTEGER NOT NULL); INSERT INTO deposit_count VALUES (0)"
)


def _count_deposits(conn: Any, events: Any) -> None:
    deposits = sum(1 for e in events if e.type == "Account.Deposited")
    conn.execute("UPDATE deposit_count SET n = n + ?", (deposits,))


async def _ours_follower(ctx: Context, sizes: dict[str, Any]) -> float:
    """A SQLiteProjector counting deposits over a seeded log of N events; events/s."""
    from runtime import ProjectionEngine, SQLiteProjector

    n, accounts = sizes["follower_events"], sizes["accounts"]
    async with new_store(ctx, "cmp-follower", kind="sqlite") as (store, path):
        assert path is not None  # sqlite
        async with store:
            seeded = await seed_bank_log(store, ctx, events=n, accounts=min(accounts, n))
            counter = SQLiteProjector(
                "deposit_counter",
                path.parent / "read-models",
                schema=_COUNTER_SCHEMA,
                batch_handler=_count_deposits,
            )
            async with ProjectionEngine(store, [counter]):
                t0 = now()
                await counter.wait_for(n, timeout=600.0)
                elapsed = now() - t0
                count = await counter.query(
                    lambda conn: int(conn.execute("SELECT n FROM deposit_count").fetchone()[0])
                )
    if count != seeded.deposits:
        raise RuntimeError(f"our follower counted {count}, expected {seeded.deposits}")
    return float(n / elapsed)


async def _ours(ctx: Context, sizes: dict[str, Any]) -> dict[str, float]:
    """Our side: deposits at 1 and 1,000 callers; cold activations; the follower."""
    total = sizes["accounts"] * sizes["deposits_each"]
    out: dict[str, float] = {}
    async with (
        new_store(ctx, "cmp-ours", kind="sqlite") as (store, _),
        _rt.make_runtime(store) as rt,
    ):
        targets = _rt.accounts(sizes["accounts"])
        await _rt.open_all(rt, targets, ctx)
        for c in (1, min(1_000, sizes["accounts"])):
            out[f"c={c}"] = (await write.deposits(rt, targets, total, c, ctx))[0].value
        await write.check_balances(rt, targets, write.AMOUNT * 2 * total)
    n, tail = sizes["events"], sizes["after_snapshot"]
    async with new_store(ctx, "cmp-cold", kind="sqlite") as (store, path):
        async with store:
            await activate.seed_account(store, f"Account-{activate.WARM}", 1, None)
            await activate.seed_account(store, "Account-cold", n, None)
            await activate.seed_account(store, "Account-snap", n, n - tail)
        assert path is not None  # sqlite
        out["cold"] = (await activate.cold_ask(path, "cold"))[0] * 1000
        out["snap"] = (await activate.cold_ask(path, "snap"))[0] * 1000
    # Without the read side (ImportError) their follower is shown alone.
    with contextlib.suppress(ImportError):
        out["follower"] = await _ours_follower(ctx, sizes)
    return out


async def run(ctx: Context) -> RunOutput:
    """One run: their side, then ours, ratios within this run."""
    try:
        import bench._eventsourcing_domain  # noqa: F401 -- is the library installed?
    except ImportError as exc:
        raise NotAvailable(f"eventsourcing is not installed ({exc})") from exc
    sizes = ctx.sizes(SIZES)
    work = ctx.fresh_dir("eventsourcing")
    try:
        cache = {**BEST_CACHE, "AGGREGATE_CACHE_MAXSIZE": str(sizes["accounts"])}
        plain_rate, bank = _theirs_writes(ctx, work / "writes.db", sizes, {})
        cached_rate, cached_bank = _theirs_writes(ctx, work / "cached.db", sizes, cache)
        cached_bank.close()
        follow_rate = _theirs_follower(ctx, bank, work / "follower.db", sizes)
        bank.close()
        cold, snap = _theirs_cold(work / "cold.db", sizes["events"], sizes["after_snapshot"])
    finally:
        ctx.discard(work)
    out = RunOutput(info={"their_cache_settings": cache, "their_synchronous": "FULL (2)"})
    params = {k: v for k, v in sizes.items() if k != "follower_events"}
    try:
        ours = await _ours(ctx, sizes)
    except NotAvailable as exc:
        out.info["ours"] = f"not available: {exc}"
        ours = {}
    n, tail = sizes["events"], sizes["after_snapshot"]
    c_max = min(1_000, sizes["accounts"])
    # (case with ours, our key, theirs, unit, case when ours is missing or None)
    rows = [
        ("deposits: ours c=1 | theirs", "c=1", plain_rate, "commands/s", "deposits: theirs"),
        (
            "deposits: ours c=1 | theirs cached",
            "c=1",
            cached_rate,
            "commands/s",
            "deposits: theirs cached",
        ),
        (
            f"deposits: ours c={c_max} | theirs cached",
            f"c={c_max}",
            cached_rate,
            "commands/s",
            None,
        ),
        (f"cold load {n:,} events", "cold", cold, "ms", f"cold load {n:,} events: theirs"),
        (
            f"cold load snapshot + {tail}",
            "snap",
            snap,
            "ms",
            f"cold load snapshot + {tail}: theirs",
        ),
    ]
    for case, key, theirs, unit, alone in rows:
        if key in ours:
            out.samples.append(Sample(case, ours[key], unit, theirs, "theirs", params))
        elif alone is not None:
            out.samples.append(Sample(alone, theirs, unit, params=params))
    follower = f"follower over {sizes['follower_events']:,} events"
    follower_params = {"follower_events": sizes["follower_events"], "accounts": sizes["accounts"]}
    if "follower" in ours:
        out.samples.append(
            Sample(follower, ours["follower"], "events/s", follow_rate, "theirs", follower_params)
        )
    else:
        out.samples.append(
            Sample(f"{follower}: theirs", follow_rate, "events/s", params=follower_params)
        )
    return out


WORKLOAD = Workload(
    name="eventsourcing",
    summary="side by side with the eventsourcing library: writes, cold loads, a follower",
    run=run,
    sizes=SIZES,
    stores=("sqlite",),
)
