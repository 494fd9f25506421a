"""``rebuild``: rebuild a read model from position 0 (waiting for the read side).

To fill in when projectors land (DESIGN.md, "Reading"): seed N deposits over
10,000 accounts (straight to the store, not measured), start a runtime with a
projector summing balances per account, start a rebuild and sample its
progress every ~50 ms. Return:

* ``Sample("rebuild", events / seconds, "events/s")`` and the total seconds;
* ``series["rebuild progress"] = [(seconds, position), ...]`` -- the report
  plots it as "rebuild progress over time" (see ``bench/_plots.py``);
* a check that the rebuilt read model equals the expected balances.
"""

from __future__ import annotations

from bench._context import Context, Workload
from bench._measure import NotAvailable, RunOutput

__all__ = ["WORKLOAD", "require_read_side"]

SIZES = {
    "smoke": {"events": 1_000},
    "quick": {"events": 100_000},
    "full": {"events": 1_000_000},
}


def require_read_side() -> None:
    """Raise NotAvailable until ``runtime`` exports the read side (``Projector``)."""
    try:
        import runtime
    except ImportError as exc:
        raise NotAvailable(f"runtime not importable ({exc})") from exc
    if not hasattr(runtime, "Projector"):
        raise NotAvailable("read side (projectors, rebuild, live lag) not landed yet")


async def run(ctx: Context) -> RunOutput:
    """One run (pending the read side)."""
    require_read_side()
    raise NotAvailable("rebuild workload not written yet: fill in bench/workloads/rebuild.py")


WORKLOAD = Workload(
    name="rebuild",
    summary="read-model rebuild from position 0: events/s and progress over time",
    run=run,
    sizes=SIZES,
)
