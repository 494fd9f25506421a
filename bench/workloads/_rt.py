"""Shared helpers for workloads that drive the runtime (public API only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from bench._context import Context
from bench._measure import LatencyRecorder, NotAvailable, now

__all__ = ["accounts", "ask_many", "import_runtime", "make_runtime", "reply_value"]

ASK_TIMEOUT = 60.0
PROGRESS_EVERY = 16
"""Asks a caller makes between two progress updates."""


def import_runtime() -> tuple[Any, Any]:
    """``(Runtime, Address)`` from the public ``runtime`` package, or NotAvailable."""
    try:
        import runtime

        return runtime.Runtime, runtime.Address
    except (ImportError, AttributeError) as exc:
        raise NotAvailable(f"runtime.Runtime/Address not available yet ({exc})") from exc


def make_runtime(store: Any, **options: Any) -> Any:
    """A Runtime for the bank example over an *unopened* store (it opens and closes it).

    ``options`` go to ``Runtime`` as they are (``max_actors=``, ``idle_timeout=``).
    """
    from aggregates.examples.bank import Account

    runtime_cls, _ = import_runtime()
    return runtime_cls(aggregates=[Account], store=store, **options)


def reply_value(outcome: Any) -> Any:
    """The value a query replied with (the outcome's ``reply``/``value`` attribute)."""
    for name in ("reply", "value"):
        if hasattr(outcome, name):
            return getattr(outcome, name)
    raise NotAvailable(f"the ask outcome {type(outcome).__name__} carries no reply value")


def accounts(count: int) -> list[Any]:
    """Addresses ``Account/bench-0`` ... ``Account/bench-{count-1}``."""
    _, address = import_runtime()
    return [address("Account", f"bench-{i}") for i in range(count)]


async def ask_many(
    rt: Any,
    targets: list[Any],
    command: Callable[[int], Any],
    total: int,
    concurrency: int,
    ctx: Context,
    label: str,
) -> tuple[float, LatencyRecorder]:
    """``total`` asks from ``concurrency`` callers in a closed loop; (wall s, latencies).

    Caller j sends to targets j, j+c, j+2c, ... (mod len(targets)), so callers
    do not queue behind each other on one actor unless targets are fewer
    than callers. ``command(i)`` builds the i-th command of a caller.
    """
    latencies = LatencyRecorder()
    task = ctx.progress.task(label, total)
    n_targets = len(targets)

    async def caller(j: int, count: int) -> None:
        # The harness's own work kept small (it shares the event loop with the
        # runtime): clock and recorder bound locally, progress in steps.
        clock = time.perf_counter
        record = latencies.values.append
        ask = rt.ask
        for i in range(count):
            target = targets[(j + i * concurrency) % n_targets]
            t0 = clock()
            await ask(target, command(i), timeout=ASK_TIMEOUT)
            record(clock() - t0)
            if not (i + 1) % PROGRESS_EVERY:
                task.advance(PROGRESS_EVERY)
        task.advance(count % PROGRESS_EVERY)

    counts = [total // concurrency + (j < total % concurrency) for j in range(concurrency)]
    t0 = now()
    async with anyio.create_task_group() as tg:
        for j, count in enumerate(counts):
            if count:
                tg.start_soon(caller, j, count)
    elapsed = now() - t0
    task.done()
    return elapsed, latencies


async def open_all(rt: Any, targets: list[Any], ctx: Context, concurrency: int = 1000) -> None:
    """Open every account (set-up, not measured)."""
    from aggregates.examples.bank import Open

    await ask_many(
        rt,
        targets,
        lambda _i: Open(owner="bench"),
        len(targets),
        min(concurrency, len(targets)),
        ctx,
        "open accounts",
    )
