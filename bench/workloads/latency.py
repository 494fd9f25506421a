"""``latency``: ask latency percentiles at a fixed offered load (open loop).

Commands are started on a fixed schedule whether or not earlier ones have
finished, and each latency runs from the command's *scheduled* start, so a
stall shows in the tail instead of silently slowing the load generator down
("coordinated omission").
"""

from __future__ import annotations

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import LatencyRecorder, RunOutput, Sample, now
from bench.workloads import _rt

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {"accounts": 20, "rate": 200, "seconds": 0.2},
    "quick": {"accounts": 1_000, "rate": 500, "seconds": 4.0},
    "full": {"accounts": 10_000, "rate": 1_000, "seconds": 20.0},
}


async def run(ctx: Context) -> RunOutput:
    """One run: open the accounts, then offer deposits at ``rate``/s for ``seconds``."""
    from aggregates.examples.bank import Deposit

    sizes = ctx.sizes(SIZES)
    rate, count = sizes["rate"], int(sizes["rate"] * sizes["seconds"])
    lat = LatencyRecorder()
    async with new_store(ctx, "latency") as (store, _path), _rt.make_runtime(store) as rt:
        targets = _rt.accounts(sizes["accounts"])
        await _rt.open_all(rt, targets, ctx)
        task = ctx.progress.task(f"latency at {rate}/s", count)

        async def one(i: int, scheduled: float) -> None:
            target = targets[i % len(targets)]
            await rt.ask(target, Deposit(amount=1), timeout=_rt.ASK_TIMEOUT)
            lat.add(now() - scheduled)
            task.advance()

        start = now()
        async with anyio.create_task_group() as tg:
            for i in range(count):
                scheduled = start + i / rate
                delay = scheduled - now()
                if delay > 0:
                    await anyio.sleep(delay)
                tg.start_soon(one, i, scheduled)
        elapsed = now() - start
        task.done()
    if len(lat.values) != count:
        raise RuntimeError(f"sent {count} commands, {len(lat.values)} completed")
    params = {"rate": rate, "commands": count, "accounts": sizes["accounts"]}
    pct = lat.summary((50, 95, 99))
    samples = [Sample(f"ask {k}", v, "ms", params=params) for k, v in pct.items()]
    samples.append(Sample("achieved load", count / elapsed, "commands/s", params=params))
    return RunOutput(samples=samples)


WORKLOAD = Workload(
    name="latency",
    summary="ask latency p50/p95/p99/max at a fixed offered load",
    run=run,
    sizes=SIZES,
)
