"""``activate``: cold activation of one account, with a fresh runtime each time.

Two cases: an account of N events (10,000 at quick and full) and no
snapshot (full replay), and an account with a snapshot plus 99 events after
it. The events are written straight to the store beforehand (not measured);
the figure is the first ask (a ``GetBalance`` query) to the account on a
fresh store and runtime that have never seen it. Each fresh runtime first
answers one ask to another, one-event account (not measured), so the figure
is the account's activation (read, decode, apply, reply), not the runtime's
own first-ask costs (connections, statement cache).

Reference, in the same run: ``store.read_stream`` of the same N-event stream
(rows decoded into ``RecordedEvent``) on a fresh store, warmed the same way
(one read of another stream first). The no-snapshot row carries it as its
reference, so ``ours/ref`` is activation / (read + decode). Replay reads
through the leaner ``store.read_stream_payloads`` (no position, metadata,
id or time per event), also timed here: below that, activation has only the
aggregate's ``apply`` calls and the ask round trip to trim.

The snapshot deliberately holds a balance 1,000,000 above the true one: the
reply then proves the snapshot was used (a full replay would answer the true
balance), so the figure is known to measure the snapshot path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._context import Context, Workload, new_store
from bench._measure import RunOutput, Sample, now
from bench.workloads import _rt

__all__ = ["WORKLOAD", "cold_ask", "seed_account"]

SIZES = {
    "smoke": {"events": 200, "after_snapshot": 9},
    "quick": {"events": 10_000, "after_snapshot": 99},
    "full": {"events": 10_000, "after_snapshot": 99},
}
MARK = 1_000_000
_CHUNK = 1_000


async def seed_account(store: Any, stream: str, events: int, snapshot_at: int | None) -> int:
    """Write ``Opened`` + deposits of 1 (``events`` in all); return the expected balance."""
    from aggregates.examples.bank import Account
    from stores import NewEvent

    batch = [NewEvent("Account.Opened", {"owner": "bench"})]
    batch += [NewEvent("Account.Deposited", {"amount": 1}) for _ in range(events - 1)]
    version = 0
    for start in range(0, events, _CHUNK):
        version = (await store.append(stream, batch[start : start + _CHUNK], version)).version
    if snapshot_at is None:
        return events - 1
    state = {"owner": "bench", "balance": snapshot_at - 1 + MARK, "is_open": True, "closed": False}
    await store.save_snapshot(stream, snapshot_at, state, Account.snapshot_schema_version)
    return events - 1 + MARK


WARM = "warm"  # the one-event account each fresh runtime activates first


async def cold_ask(path: Path, account_id: str) -> tuple[float, Any]:
    """Seconds to the first reply from ``account_id`` on a fresh runtime, and the balance."""
    import stores
    from aggregates.examples.bank import GetBalance

    _, address = _rt.import_runtime()
    store = stores.SQLiteStore(path, durability=stores.Durability.FULL)
    async with _rt.make_runtime(store) as rt:
        await rt.ask(address("Account", WARM), GetBalance(), timeout=60.0)
        t0 = now()
        outcome = await rt.ask(address("Account", account_id), GetBalance(), timeout=60.0)
        return now() - t0, _rt.reply_value(outcome)


async def cold_read(path: Path, stream: str, method: str) -> tuple[float, int]:
    """Seconds to read all of ``stream`` with ``store.<method>`` on a fresh store; events read."""
    import stores

    async with stores.SQLiteStore(path, durability=stores.Durability.FULL) as store:
        read = getattr(store, method)
        await read(f"Account-{WARM}")
        t0 = now()
        events = await read(stream)
        return now() - t0, len(events)


async def run(ctx: Context) -> RunOutput:
    """One run: seed both accounts, then time each cold activation."""
    sizes = ctx.sizes(SIZES)
    n, tail = sizes["events"], sizes["after_snapshot"]
    _rt.import_runtime()
    out = RunOutput()
    async with new_store(ctx, "activate", kind="sqlite") as (store, path):
        async with store:
            await seed_account(store, f"Account-{WARM}", 1, None)
            plain = await seed_account(store, "Account-cold", n, None)
            snap = await seed_account(store, "Account-snap", n, n - tail)
        assert path is not None  # sqlite
        reads = {}
        # read_stream_payloads is newer than read_stream: time it where the
        # store has it (the row is missing, not failed, where it does not).
        methods = ["read_stream"]
        if hasattr(store, "read_stream_payloads"):
            methods.append("read_stream_payloads")
        for method in methods:
            seconds, got = await cold_read(path, "Account-cold", method)
            if got != n:
                raise RuntimeError(f"{method} returned {got} events, expected {n}")
            reads[method] = seconds * 1000
        read_ms = reads["read_stream"]
        cases = [
            (f"{n:,} events, no snapshot", "cold", plain),
            (f"snapshot + {tail} events", "snap", snap),
        ]
        for case, account_id, expected in cases:
            seconds, balance = await cold_ask(path, account_id)
            if balance != expected:
                if balance == expected - MARK:
                    raise RuntimeError(f"{case}: the runtime ignored the snapshot (full replay)")
                raise RuntimeError(f"{case}: balance {balance}, expected {expected}")
            params = {"events": n, "after_snapshot": tail if account_id == "snap" else n}
            ref = read_ms if account_id == "cold" else None
            kind = "read" if ref is not None else None
            out.samples.append(Sample(case, seconds * 1000, "ms", ref, kind, params))
        for method, ms in reads.items():
            case = f"read + decode {n:,} events (store.{method})"
            out.samples.append(Sample(case, ms, "ms", params={"events": n}))
    return out


WORKLOAD = Workload(
    name="activate",
    summary="cold activation: N events without snapshot, and snapshot + 99 events, "
    "beside read_stream + decode of the same N events",
    run=run,
    sizes=SIZES,
    stores=("sqlite",),
)
