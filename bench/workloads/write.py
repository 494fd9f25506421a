"""``write``: durable commands through actors (deposits) at 1, 100 and 1,000 callers.

Each ask is a full round: mailbox, handler, group-committed append at the
store's durability, apply, reply. Accounts are opened first (not measured);
afterwards every balance is read back and must add up.
"""

from __future__ import annotations

from typing import Any

from bench._context import Context, Workload, new_store
from bench._measure import RunOutput, Sample
from bench.workloads import _rt

__all__ = ["WORKLOAD", "check_balances", "deposits"]

SIZES = {
    "smoke": {"accounts": 20, "levels": [[1, 10], [4, 40]]},
    "quick": {"accounts": 10_000, "levels": [[1, 300], [100, 5_000], [1_000, 20_000]]},
    "full": {"accounts": 10_000, "levels": [[1, 2_000], [100, 50_000], [1_000, 200_000]]},
}
AMOUNT = 5


async def deposits(
    rt: Any, targets: list[Any], total: int, concurrency: int, ctx: Context
) -> list[Sample]:
    """Run ``total`` deposits from ``concurrency`` callers; commands/s and p50/p99 samples."""
    from aggregates.examples.bank import Deposit

    elapsed, lat = await _rt.ask_many(
        rt,
        targets,
        lambda _i: Deposit(amount=AMOUNT),
        total,
        concurrency,
        ctx,
        f"deposit c={concurrency}",
    )
    params = {"concurrency": concurrency, "commands": total, "accounts": len(targets)}
    pct = lat.summary((50, 99))
    return [
        Sample(f"c={concurrency} throughput", total / elapsed, "commands/s", params=params),
        Sample(f"c={concurrency} ask p50", pct["p50"], "ms", params=params),
        Sample(f"c={concurrency} ask p99", pct["p99"], "ms", params=params),
    ]


async def check_balances(rt: Any, targets: list[Any], expected_total: int) -> None:
    """Read every balance back (queries) and check they add up to ``expected_total``."""
    from aggregates.examples.bank import GetBalance

    total = 0
    for target in targets:
        total += _rt.reply_value(await rt.ask(target, GetBalance(), timeout=_rt.ASK_TIMEOUT))
    if total != expected_total:
        raise RuntimeError(f"balances add up to {total}, expected {expected_total}")


async def run(ctx: Context) -> RunOutput:
    """One run: open the accounts, then each concurrency level, then check the balances."""
    sizes = ctx.sizes(SIZES)
    out = RunOutput()
    async with new_store(ctx, "write") as (store, _path), _rt.make_runtime(store) as rt:
        targets = _rt.accounts(sizes["accounts"])
        await _rt.open_all(rt, targets, ctx)
        for concurrency, total in sizes["levels"]:
            out.samples += await deposits(rt, targets, total, concurrency, ctx)
        await check_balances(rt, targets, AMOUNT * sum(t for _c, t in sizes["levels"]))
        out.info["runtime_statistics"] = repr(rt.statistics())
    return out


WORKLOAD = Workload(
    name="write",
    summary="durable deposits through actors: commands/s and ask latency p50/p99",
    run=run,
    sizes=SIZES,
)
