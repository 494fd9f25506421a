"""``write``: durable commands through actors (deposits) at 1, 100 and 1,000 callers.

Each ask is a full round: mailbox, handler, group-committed append at the
store's durability, apply, reply. Accounts are opened first (not measured);
afterwards every balance is read back and must add up.

The default rows measure ``Runtime(...)`` and its store as they ship, which
hold the cyclic GC's generation-0 threshold at ``DEFAULT_GC_THRESHOLD``
while open. Then the ``gc_levels`` run again on a fresh store, the store and
the runtime built with ``gc_threshold=None``, which leaves Python's GC
settings as they are: the rows named ``(gc_threshold=None)``, to show what
that setting is worth.

The single caller's p50 has a floor beside it, as in ``append``: the run's
rows committed one per transaction with plain ``sqlite3``, each awaited
through a worker thread (the commit plus the thread round trip).

The default rows of the other levels have the bare group-commit loop beside
them (``bench.workloads._bareloop``: the same deposits by the same callers,
per-account locks, one writer task committing each batch with plain
``sqlite3``, no actor machinery), run right after the runtime on a copy of
its schema with its pragmas: ``ours/ref`` is what the actors and the store
gain or cost over that loop, measured in the same run.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._context import Context, Workload, new_store
from bench._measure import RunOutput, Sample
from bench.workloads import _bareloop, _rawsqlite, _rt
from bench.workloads.append import commit_floor

__all__ = ["WORKLOAD", "check_balances", "deposits"]

# ``gc_levels``: the levels also run with gc_threshold=None (where many asks
# are in flight, which is where the GC setting matters). Quick c=1 runs 1,000
# deposits: at 300 (~0.2 s) one scheduler hiccup moved the figure by a third.
SIZES = {
    "smoke": {"accounts": 20, "levels": [[1, 10], [4, 40]], "gc_levels": [[4, 40]], "commits": 5},
    "quick": {
        "accounts": 10_000,
        "levels": [[1, 1_000], [100, 5_000], [1_000, 20_000]],
        "gc_levels": [[1_000, 20_000]],
        "commits": 300,
    },
    "full": {
        "accounts": 10_000,
        "levels": [[1, 2_000], [100, 50_000], [1_000, 200_000]],
        "gc_levels": [[100, 50_000], [1_000, 200_000]],
        "commits": 1_000,
    },
}
AMOUNT = 5


def gc_label(gc_untouched: bool) -> str:
    """The suffix naming a row measured with ``gc_threshold=None`` (empty for the default)."""
    return " (gc_threshold=None)" if gc_untouched else ""


def gc_variant(gc_untouched: bool) -> tuple[dict[str, Any], int | None]:
    """``(Runtime options, the gc_threshold in effect)`` for the default or untouched GC."""
    if gc_untouched:
        return {"gc_threshold": None}, None
    from runtime import DEFAULT_GC_THRESHOLD

    return {}, DEFAULT_GC_THRESHOLD


async def deposits(
    rt: Any,
    targets: list[Any],
    total: int,
    concurrency: int,
    ctx: Context,
    gc_untouched: bool = False,
) -> list[Sample]:
    """Run ``total`` deposits from ``concurrency`` callers; commands/s and p50/p99 samples.

    ``gc_untouched`` only labels the rows (the runtime was built with ``gc_threshold=None``).
    """
    from aggregates.examples.bank import Deposit

    elapsed, lat = await _rt.ask_many(
        rt,
        targets,
        lambda _i: Deposit(amount=AMOUNT),
        total,
        concurrency,
        ctx,
        f"deposit c={concurrency}{gc_label(gc_untouched)}",
    )
    params = {
        "concurrency": concurrency,
        "commands": total,
        "accounts": len(targets),
        "gc_threshold": gc_variant(gc_untouched)[1],
    }
    pct = lat.summary((50, 99))
    tag = gc_label(gc_untouched)
    return [
        Sample(f"c={concurrency} throughput{tag}", total / elapsed, "commands/s", params=params),
        Sample(f"c={concurrency} ask p50{tag}", pct["p50"], "ms", params=params),
        Sample(f"c={concurrency} ask p99{tag}", pct["p99"], "ms", params=params),
    ]


async def check_balances(rt: Any, targets: list[Any], expected_total: int) -> None:
    """Read every balance back (queries) and check they add up to ``expected_total``."""
    from aggregates.examples.bank import GetBalance

    total = 0
    for target in targets:
        total += _rt.reply_value(await rt.ask(target, GetBalance(), timeout=_rt.ASK_TIMEOUT))
    if total != expected_total:
        raise RuntimeError(f"balances add up to {total}, expected {expected_total}")


async def _one_runtime(
    ctx: Context, sizes: dict[str, Any], levels: list[list[int]], gc_untouched: bool
) -> tuple[list[Sample], str]:
    """Open the accounts on a fresh store, run ``levels``, check the balances."""
    options, _ = gc_variant(gc_untouched)
    samples: list[Sample] = []
    tag = "write-gc-untouched" if gc_untouched else "write"
    async with new_store(ctx, tag, gc_untouched=gc_untouched) as (store, path):
        async with _rt.make_runtime(store, **options) as rt:
            targets = _rt.accounts(sizes["accounts"])
            await _rt.open_all(rt, targets, ctx)
            for concurrency, total in levels:
                samples += await deposits(rt, targets, total, concurrency, ctx, gc_untouched)
            await check_balances(rt, targets, AMOUNT * sum(t for _c, t in levels))
            stats = repr(rt.statistics())
            pragmas = await _rawsqlite.store_pragmas(store) if path is not None else {}
        if path is None:
            return samples, stats
        if any(c == 1 for c, _t in levels):
            # A single caller's latency, beside one-row commits through a worker thread.
            floor = await commit_floor(path, pragmas, sizes["commits"], ctx.workdir)
            samples = [
                replace(s, ref=floor, ref_kind="floor") if s.case.startswith("c=1 ask p50") else s
                for s in samples
            ]
        bare_levels = [(c, t) for c, t in levels if c > 1]
        if not gc_untouched and bare_levels:
            samples = await _beside_bare_loop(ctx, sizes, path, pragmas, bare_levels, samples)
        return samples, stats


async def _beside_bare_loop(
    ctx: Context,
    sizes: dict[str, Any],
    path: Path,
    pragmas: dict[str, Any],
    levels: list[tuple[int, int]],
    samples: list[Sample],
) -> list[Sample]:
    """``samples`` with the bare loop's figures at ``levels`` as their references."""
    _, gc_threshold = gc_variant(False)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        bare = await _bareloop.bare_deposits(
            path, Path(tmp) / "bare.db", pragmas, sizes["accounts"], levels, AMOUNT, gc_threshold
        )
    refs: dict[str, float] = {}
    for concurrency, result in bare.items():
        pct = result.latencies.summary((50, 99))
        refs[f"c={concurrency} throughput"] = len(result.latencies.values) / result.elapsed
        refs[f"c={concurrency} ask p50"] = pct["p50"]
        refs[f"c={concurrency} ask p99"] = pct["p99"]
    return [replace(s, ref=refs[s.case], ref_kind="bare") if s.case in refs else s for s in samples]


async def run(ctx: Context) -> RunOutput:
    """One run: the default runtime at every level, then gc_threshold=None at ``gc_levels``."""
    sizes = ctx.sizes(SIZES)
    out = RunOutput()
    samples, stats = await _one_runtime(ctx, sizes, sizes["levels"], False)
    out.samples += samples
    out.info["runtime_statistics"] = stats
    samples, stats = await _one_runtime(ctx, sizes, sizes["gc_levels"], True)
    out.samples += samples
    out.info[f"runtime_statistics{gc_label(True)}"] = stats
    return out


WORKLOAD = Workload(
    name="write",
    summary="durable deposits through actors: commands/s and ask latency p50/p99 "
    "(also with gc_threshold=None)",
    run=run,
    sizes=SIZES,
)
