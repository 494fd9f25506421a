"""``lag``: live read-model lag (commit -> read-model commit) under write load.

A ``Runtime`` runs the example ``account_balances`` projector (SQLite,
exactly once) while callers send deposits in a closed loop, as in ``write``:
100 callers, then the 1,000-caller load (quick; smoke: 10). Every deposit
event gets two lags, both from the same start:

* **commit time** (the start): the store's own commit listener
  (``store.add_commit_listener``, public API): the SQLite writer calls it on
  its task right after ``COMMIT``, before any caller hears "ok" -- the same
  hook the event bus uses. The bench's listener records ``perf_counter()``
  and the batch's position range. (``RecordedEvent.recorded_at`` is stamped
  at ``BEGIN``, before the commit, on the wall clock: not used.)
* **read-model commit** (rows ``lag to read-model commit``; the issue's
  definition, "commit to read-model commit"): the projector's public
  ``on_commit`` hook, which ``SQLiteProjector`` calls on the read model's own
  thread right after the transaction holding a batch's rows and its
  checkpoint has COMMITTED, with the new checkpoint. The hook records
  ``perf_counter()`` and the position (a list append: atomic under the
  GIL), so every event up to it gets that time. This is when the event is
  durable in the read model and readable by a query on another connection;
  it includes the event loop's delay in *handing* the batch to the read
  model's thread, but not its delay in hearing back.
* **visible in the loop** (rows ``lag p50`` etc., kept under their old
  names): a watcher task loops on the projector's public
  ``wait_for(position + 1)``; when it returns, ``projector.position`` has
  moved. It records ``perf_counter()`` and the new position. This is when a
  reader in the same process awaiting ``wait_for`` could first see the
  event (read-your-writes): the read-model commit plus the event loop's
  scheduling delay in resuming the watcher, which under 1,000 callers is
  most of it.

Lag of an event = end time - commit time (same clock, same process). Lags
come in runs: every event of one store commit (hundreds at c=1000) shares
its commit time, and every event of one read-model batch its end time. One
sample per deposit event in each series; p50, p99 (and max for the loop
series) are reported per level with the load actually achieved. The read
model must afterwards hold every deposit exactly once (balances and
per-account event counts add up).

The ``gc_levels`` then run again on a fresh store, projector and runtime,
the store and the runtime built with ``gc_threshold=None`` (Python's GC
settings left as they are): the rows suffixed ``(gc_threshold=None)``; the
other rows are the defaults, which hold the GC's generation-0 threshold at
``DEFAULT_GC_THRESHOLD`` while open.
"""

from __future__ import annotations

import bisect
from typing import Any

import anyio

from bench._context import Context, Workload, new_store
from bench._measure import LatencyRecorder, RunOutput, Sample, now
from bench.workloads import _rt, write
from bench.workloads.rebuild import require_read_side

__all__ = ["WORKLOAD", "lags"]

# ``gc_levels`` run again on a fresh store and runtime built with
# gc_threshold=None (rows suffixed ``(gc_threshold=None)``).
SIZES = {
    "smoke": {"accounts": 20, "levels": [[10, 100]], "gc_levels": [[10, 100]]},
    "quick": {
        "accounts": 1_000,
        "levels": [[100, 5_000], [1_000, 15_000]],
        "gc_levels": [[1_000, 15_000]],
    },
    "full": {
        "accounts": 10_000,
        "levels": [[100, 20_000], [1_000, 200_000]],
        "gc_levels": [[1_000, 200_000]],
    },
}
WAIT = 120.0  # seconds: generous; a loaded machine is slow, not broken
IDLE_POLL = 0.1  # the watcher re-checks "all done?" this often when nothing moves


def lags(
    commits: list[tuple[int, int, float]], applied: list[tuple[int, float]]
) -> LatencyRecorder:
    """Per-event lag from commit records and read-model records.

    Args:
        commits: ``(first, last, t)``: positions first..last committed at ``t``.
        applied: ``(position, t)`` in position order: everything up to
            ``position`` was visible in the read model at ``t``.

    Raises:
        RuntimeError: a committed position never reached the read model.
    """
    positions = [p for p, _t in applied]
    out = LatencyRecorder()
    for first, last, committed_at in commits:
        for position in range(first, last + 1):
            i = bisect.bisect_left(positions, position)
            if i == len(positions):
                raise RuntimeError(f"position {position} never reached the read model")
            out.add(applied[i][1] - committed_at)
    return out


async def _level(
    rt: Any,
    balances: Any,
    rm_commits: list[tuple[int, float]],
    commits: list[tuple[int, int, float]],
    targets: list[Any],
    callers: int,
    total: int,
    ctx: Context,
) -> tuple[float, LatencyRecorder, LatencyRecorder, dict[str, int]]:
    """``total`` deposits from ``callers``.

    ``rm_commits`` is appended to by the projector's ``on_commit`` hook and
    ``commits`` by the store's first commit listener (see :func:`_one_runtime`).
    Returns (wall seconds, lags to visible in the loop, lags to read-model
    commit, counts).
    """
    from aggregates.examples.bank import Deposit
    from runtime import ProjectionTimeout

    first_commit = len(commits)
    applied: list[tuple[int, float]] = []
    start = await rt.store.head()
    await balances.wait_for(start, timeout=WAIT)
    first_rm = len(rm_commits)  # the hook appended up to start already
    target: list[int | None] = [None]  # set once every deposit has committed

    async def watch() -> None:
        seen = start
        while target[0] is None or seen < target[0]:
            try:
                await balances.wait_for(seen + 1, timeout=IDLE_POLL)
            except ProjectionTimeout:
                continue  # nothing new yet: look at the target again
            t = now()
            seen = balances.position
            applied.append((seen, t))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        elapsed, _lat = await _rt.ask_many(
            rt,
            targets,
            lambda _i: Deposit(amount=write.AMOUNT),
            total,
            callers,
            ctx,
            f"deposits with projector c={callers}",
        )
        target[0] = await rt.store.head()
    # The watcher saw the target, so the hook already recorded it (it runs
    # on the read model's thread before the loop hears of the commit).
    committed = rm_commits[first_rm:]
    commits = commits[first_commit:]
    recorder = lags(commits, applied)
    to_commit = lags(commits, committed)
    for what, rec in (("visible-in-loop", recorder), ("read-model-commit", to_commit)):
        if len(rec.values) != total:
            raise RuntimeError(f"{total} deposits, but {len(rec.values)} {what} lag samples")
    counts = {
        "samples": len(recorder.values),
        "read_model_commit_samples": len(to_commit.values),
        "store_commits": len(commits),
        "read_model_commits_seen": len(applied),
        "read_model_commits": len(committed),
    }
    return elapsed, recorder, to_commit, counts


async def _one_runtime(
    ctx: Context, sizes: dict[str, Any], levels: list[list[int]], gc_untouched: bool
) -> RunOutput:
    """A fresh store, projector and runtime: open the accounts, run ``levels``, check."""
    from runtime.examples.read_models import account_balances, list_balances

    tag = write.gc_label(gc_untouched)
    options, gc_threshold = write.gc_variant(gc_untouched)
    out = RunOutput()
    name = "lag-gc-untouched" if gc_untouched else "lag"
    # (position, perf_counter()) at each read-model COMMIT, appended on the
    # read model's thread; list.append is atomic under the GIL.
    rm_commits: list[tuple[int, float]] = []

    def on_rm_commit(position: int) -> None:
        rm_commits.append((position, now()))

    # (first position, last position, perf_counter()) of every store commit.
    commits: list[tuple[int, int, float]] = []

    def on_commit(events: Any) -> None:
        # Runs on the loop right after the writer's COMMIT: keep it tiny. Added
        # before the runtime opens, so it runs before the bus's own listener
        # (which hands the batch to the read model, and may wait for it).
        commits.append((events[0].position, events[-1].position, now()))

    async with new_store(ctx, name, kind="sqlite", gc_untouched=gc_untouched) as (store, path):
        assert path is not None  # sqlite
        balances = account_balances(path.parent / "read-models", on_commit=on_rm_commit)
        store.add_commit_listener(on_commit)
        async with _rt.make_runtime(store, projectors=[balances], **options) as rt:
            targets = _rt.accounts(sizes["accounts"])
            await _rt.open_all(rt, targets, ctx)
            for callers, total in levels:
                elapsed, recorder, to_commit, counts = await _level(
                    rt, balances, rm_commits, commits, targets, callers, total, ctx
                )
                params = {
                    "concurrency": callers,
                    "deposits": total,
                    "accounts": len(targets),
                    "gc_threshold": gc_threshold,
                }
                pct = recorder.summary((50, 99))
                rm = to_commit.summary((50, 99))
                c = f"c={callers}"
                rm_case = f"{c} lag to read-model commit"
                out.samples += [
                    Sample(f"{c} lag p50{tag}", pct["p50"], "ms", params=params),
                    Sample(f"{c} lag p99{tag}", pct["p99"], "ms", params=params),
                    Sample(f"{c} lag max{tag}", pct["max"], "ms", params=params),
                    Sample(f"{rm_case} p50{tag}", rm["p50"], "ms", params=params),
                    Sample(f"{rm_case} p99{tag}", rm["p99"], "ms", params=params),
                    Sample(f"{c} write load{tag}", total / elapsed, "commands/s", params=params),
                ]
                out.info[f"{c}{tag}"] = counts
            await balances.wait_for(await rt.store.head(), timeout=WAIT)
            out.info[f"projector_batches{tag}"] = balances.statistics().batches
            rows = await list_balances(balances)
    deposits = sum(total for _c, total in levels)
    got = (len(rows), sum(r.events for r in rows), sum(r.balance for r in rows))
    want = (len(targets), len(targets) + deposits, write.AMOUNT * deposits)
    if got != want:
        raise RuntimeError(f"read model{tag} has (accounts, events, total) {got}, expected {want}")
    out.info[f"read_model{tag}"] = dict(zip(("accounts", "events", "total"), got, strict=True))
    return out


async def run(ctx: Context) -> RunOutput:
    """One run: the default runtime at every level, then gc_threshold=None at ``gc_levels``."""
    require_read_side()
    sizes = ctx.sizes(SIZES)
    out = RunOutput(
        info={
            "commit_time": "store.add_commit_listener (writer task, right after COMMIT)",
            "read_model_commit_time": "SQLiteProjector on_commit hook (read model's "
            "thread, right after its COMMIT)",
            "read_model_time": "watcher task on projector.wait_for(position + 1)",
        }
    )
    for levels, gc_untouched in ((sizes["levels"], False), (sizes["gc_levels"], True)):
        one = await _one_runtime(ctx, sizes, levels, gc_untouched)
        out.samples += one.samples
        out.info.update(one.info)
    return out


WORKLOAD = Workload(
    name="lag",
    summary="live read-model lag (commit to read-model commit) under 1,000 callers "
    "(also with gc_threshold=None)",
    run=run,
    sizes=SIZES,
    stores=("sqlite",),
)
