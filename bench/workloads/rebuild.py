"""``rebuild``: rebuild the account-balances read model from position 0.

Each run seeds a log of N bank events over 10,000 accounts straight through
the store's public API (``store.append`` of up to 50 events per call from 100
concurrent appenders, group-committed at durability FULL; not measured, its
rate goes to ``info``), closes that store, then measures, in the same run
and on the same file:

* **catch-up from 0**: a ``Runtime`` started with the example
  ``account_balances`` projector (``runtime.examples.read_models``), whose
  checkpoint starts at 0: the live projector reads the log and applies it,
  exactly once (read model and checkpoint commit in one SQLite transaction),
  until ``wait_for(head)`` returns.
* **read + decode**: ``rt.store.iter_all`` over the whole (now idle) log in
  5,000-event pages (SQLite rows -> ``RecordedEvent`` with orjson-decoded
  payloads), touching each event: what reading the log alone costs, on the
  store instance and file state the rebuild then reads.
* **rebuild from 0**: ``rt.projections.rebuild("account_balances")`` -- a
  fresh copy of the read model from position 0 beside the live one, then the
  atomic swap; its progress callback gives the "rebuild progress over time"
  series (seconds, position).

Rates are log events per second; the rebuild and catch-up rows carry the
read + decode rate of the same run as their reference (``read``), so the
ratio says how close the read model comes to the cost of reading the log.
The rebuild reads the next page while applying the current one (two
threads), so on a quiet machine the ratio approaches 1; the three figures
are taken seconds apart on a shared machine, so noise can push it past 1.
After the rebuild, the read model must hold every account with its exact
balance and event count (a lost or doubled event would show).
"""

from __future__ import annotations

from typing import Any

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import NotAvailable, RunOutput, Sample, now
from bench.workloads._log import SeededLog, seed_bank_log

__all__ = ["WORKLOAD", "check_balances", "read_decode_rate", "require_read_side"]

SIZES = {
    "smoke": {"events": 1_000, "accounts": 100},
    "quick": {"events": 100_000, "accounts": 10_000},
    "full": {"events": 1_000_000, "accounts": 10_000},
}
WAIT = 600.0  # seconds: generous, a machine under load is slow, not broken
NAME = "account_balances"


def require_read_side() -> None:
    """Raise NotAvailable unless ``runtime`` exports the read side (``Projector``)."""
    try:
        import runtime
    except ImportError as exc:
        raise NotAvailable(f"runtime not importable ({exc})") from exc
    if not hasattr(runtime, "Projector"):
        raise NotAvailable("read side (projectors, rebuild, live lag) not landed yet")


async def read_decode_rate(store: Any, expected: SeededLog) -> float:
    """Events/s of ``store.iter_all`` over the whole log (checks it read everything)."""
    count = total = 0
    t0 = now()
    async for event in store.iter_all(page_size=5000):
        count += 1
        if event.type == "Account.Deposited":
            total += event.data["amount"]
    seconds = now() - t0
    if (count, total) != (expected.events, expected.total):
        raise RuntimeError(f"read {count} events summing {total}, expected {expected}")
    return count / seconds


async def check_balances(model: Any, expected: SeededLog) -> dict[str, int]:
    """The read model holds every account once, with the seeded sums and event counts.

    Returns:
        What the read model holds: ``accounts``, ``events`` and ``total``.
    """
    from runtime.examples.read_models import list_balances, total_balance

    rows = await list_balances(model)
    events = sum(r.events for r in rows)
    total = await total_balance(model)
    got = (len(rows), events, total)
    want = (expected.accounts, expected.events, expected.total)
    if got != want:
        raise RuntimeError(f"read model has (accounts, events, total) {got}, expected {want}")
    return {"accounts": len(rows), "events": events, "total": total}


async def run(ctx: Context) -> RunOutput:
    """One run: seed, read + decode, live catch-up from 0, then rebuild from 0."""
    require_read_side()
    import stores
    from aggregates.examples.bank import Account
    from runtime import Runtime
    from runtime.examples.read_models import account_balances

    sizes = ctx.sizes(SIZES)
    async with new_store(ctx, "rebuild", kind="sqlite") as (store, path):
        assert path is not None  # sqlite
        async with store:
            seeded = await seed_bank_log(
                store, ctx, events=sizes["events"], accounts=sizes["accounts"]
            )
        balances = account_balances(path.parent / "read-models")
        # A second store instance on the same file: the seeding one is closed.
        log = stores.SQLiteStore(path, durability=stores.Durability.FULL)
        points: list[tuple[float, float]] = []
        async with Runtime([Account], store=log, projectors=[balances]) as rt:
            t0 = now()
            await balances.wait_for(seeded.events, timeout=WAIT)
            catch_up = now() - t0
            await check_balances(balances, seeded)
            # Read on the same store instance and file state the rebuild reads.
            read_rate = await read_decode_rate(rt.store, seeded)
            task = ctx.progress.task("rebuild", seeded.events)
            done = 0

            def progress(p: Any) -> None:
                nonlocal done
                points.append((p.elapsed, float(p.position)))
                task.advance(p.position - done)
                done = p.position

            t0 = now()
            with anyio.fail_after(WAIT):  # a stuck rebuild fails the workload, never hangs it
                final = await rt.projections.rebuild(NAME, progress=progress, display=False)
            seconds = now() - t0
            task.done()
            held = await check_balances(balances, seeded)
            generation = balances.generation
    if final.position != seeded.events or generation != 2:
        raise RuntimeError(f"rebuild ended at {final.position}, generation {generation}")
    params = {"events": seeded.events, "accounts": seeded.accounts}
    rate = seeded.events / seconds
    return RunOutput(
        samples=[
            Sample("rebuild from 0", rate, "events/s", read_rate, "read", params),
            Sample("rebuild time", seconds, "s", params=params),
            Sample(
                "catch-up from 0 (live projector)",
                seeded.events / catch_up,
                "events/s",
                read_rate,
                "read",
                params,
            ),
            Sample("read + decode (store.iter_all)", read_rate, "events/s", params=params),
        ],
        series={"rebuild progress": [(0.0, 0.0), *points]},
        info={
            "seeding": f"store.append, 50 events/call, 100 concurrent appenders, "
            f"{seeded.appends:,} calls, {seeded.events / seeded.seconds:,.0f} events/s",
            "read_model": "runtime.examples.read_models.account_balances (SQLite, exactly once)",
            "rebuild_pages": "5,000 events per read and per transaction (rebuild default)",
            "read_model_after_rebuild": held,
            "seeded": {"deposits": seeded.deposits, "total": seeded.total},
        },
    )


WORKLOAD = Workload(
    name="rebuild",
    summary="account-balances read model rebuilt from 0: events/s beside read + decode",
    run=run,
    sizes=SIZES,
    stores=("sqlite",),
)
