"""Running workloads: repeats, the not-available boundary, failures kept apart."""

from __future__ import annotations

import dataclasses
import gc
import sys
import traceback
from collections.abc import Sequence

from bench._context import Context, Workload
from bench._measure import NotAvailable, RunOutput, WorkloadResult, collect, now
from bench.workloads import WORKLOADS

__all__ = ["run_all", "run_workload"]


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _unavailable_reason(exc: BaseException) -> str | None:
    """Why a workload cannot run, if every leaf says so; else None (a real failure).

    ImportError/AttributeError count: a dependency still being built is missing
    a module or a public name.
    """
    leaves = _leaves(exc)
    if all(isinstance(e, NotAvailable | ImportError | AttributeError) for e in leaves):
        return "; ".join(sorted({str(e) for e in leaves}))
    return None


async def run_workload(ctx: Context, workload: Workload, repeat: int) -> WorkloadResult:
    """Run one workload ``repeat`` times and summarise; never raises for its failures."""
    store = ctx.store if ctx.store in workload.stores else workload.stores[0]
    wctx = dataclasses.replace(ctx, store=store)
    sizes = {**workload.sizes[ctx.mode], "store": store}
    runs: list[RunOutput] = []
    t0 = now()
    try:
        for _ in range(repeat):
            gc.collect()  # start each run without the previous run's garbage
            runs.append(await workload.run(wctx))
        result = collect(workload.name, sizes, runs)
    except Exception as exc:
        reason = _unavailable_reason(exc)
        if reason is not None:
            result = WorkloadResult(workload.name, "not available", sizes, reason=reason)
        else:
            traceback.print_exception(exc, file=sys.stderr)
            leaf = _leaves(exc)[0]
            result = WorkloadResult(
                workload.name, "failed", sizes, reason=f"{type(leaf).__name__}: {leaf}"
            )
    result.seconds = now() - t0
    if store != ctx.store:
        result.info["store_note"] = f"runs on {store} only (--store {ctx.store} ignored)"
    return result


async def run_all(ctx: Context, names: Sequence[str], repeat: int) -> list[WorkloadResult]:
    """Run the named workloads in order."""
    return [await run_workload(ctx, WORKLOADS[name], repeat) for name in names]
