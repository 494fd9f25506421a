"""``memory``: bytes per live idle actor, minus the aggregate's own state.

N accounts are activated with a query each (no events written), then left
idle. ``tracemalloc`` counts the bytes the runtime still holds for them,
addresses included (they are built inside the measured window and kept only
if the runtime keeps them). The size of N bare ``Account()`` states, measured
the same way, is subtracted: what remains is the runtime's per-actor cost.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import RunOutput, Sample
from bench.workloads import _rt

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {"actors": 200},
    # Quick counts 10,000 actors: the time goes into activating them, and the
    # per-actor figure was within ~3% of 20,000's (463 vs 449 bytes, one
    # shared machine); full keeps 100,000.
    "quick": {"actors": 10_000},
    "full": {"actors": 100_000},
}
_CALLERS = 100
_LIVE_NAMES = ("live_actors", "live", "actors_live", "active_actors", "actors")


def _traced(fn: Any) -> tuple[int, Any]:
    """(bytes still allocated after ``fn()``, its result), garbage collected before and after."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    result = fn()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, result


def _state_bytes(n: int) -> int:
    """Bytes held by ``n`` bare Account states (the list holding them excluded)."""
    from aggregates.examples.bank import Account

    used, states = _traced(lambda: [Account() for _ in range(n)])
    return used - sys.getsizeof(states)


def live_count(stats: Any) -> int | None:
    """The runtime's live-actor count from its statistics, if it reports one."""
    for name in _LIVE_NAMES:
        value = getattr(stats, name, None)
        if isinstance(value, int):
            return value
    return None


async def _activate_idle(rt: Any, n: int, ctx: Context) -> int:
    """Activate ``n`` actors with one query each; bytes still held afterwards."""
    from aggregates.examples.bank import GetBalance

    _, address = _rt.import_runtime()
    # Warm up: first-use allocations (caches, the writer) are not per actor.
    await rt.ask(address("Account", "warm-up"), GetBalance(), timeout=_rt.ASK_TIMEOUT)
    task = ctx.progress.task(f"activate {n:,} actors", n)

    async def caller(j: int) -> None:
        for i in range(j, n, _CALLERS):
            target = address("Account", f"idle-{i}")
            await rt.ask(target, GetBalance(), timeout=_rt.ASK_TIMEOUT)
            task.advance()

    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    async with anyio.create_task_group() as tg:
        for j in range(_CALLERS):
            tg.start_soon(caller, j)
    task.done()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


async def run(ctx: Context) -> RunOutput:
    """One run: activate N idle actors under tracemalloc; bytes per actor."""
    n = ctx.sizes(SIZES)["actors"]
    _rt.import_runtime()
    out = RunOutput()
    tracemalloc.start()
    try:
        # Room for every actor, and no idle passivation while we count them.
        options = {"max_actors": n + 100, "idle_timeout": 3600.0}
        async with new_store(ctx, "memory") as (store, _), _rt.make_runtime(store, **options) as rt:
            used = await _activate_idle(rt, n, ctx)
            live = live_count(rt.statistics())
            state = _state_bytes(n)
    finally:
        tracemalloc.stop()
    if live is not None and live < n:
        raise RuntimeError(f"only {live:,} of {n:,} actors stayed live (passivated?)")
    out.info["live_actors"] = live if live is not None else "not reported by statistics()"
    params = {"actors": n}
    out.samples += [
        Sample("per idle actor (runtime)", (used - state) / n, "bytes", params=params),
        Sample("per idle actor (total)", used / n, "bytes", params=params),
        Sample("Account state alone", state / n, "bytes", params=params),
    ]
    return out


WORKLOAD = Workload(
    name="memory",
    summary="bytes per live idle actor, minus the aggregate's own state (tracemalloc)",
    run=run,
    sizes=SIZES,
)
