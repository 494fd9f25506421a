"""``lag``: live projector lag under write load (waiting for the read side).

To fill in when projectors land: run the ``write`` load at a fixed rate with
a projector following the live bus; for each event, lag = time the projector
applied it - time its append committed. Return ``Sample``s ``lag p50``,
``lag p99``, ``lag max`` (ms), and check that the projector saw every event
exactly once (guarantee 6).
"""

from __future__ import annotations

from bench._context import Context, Workload
from bench._measure import NotAvailable, RunOutput
from bench.workloads.rebuild import require_read_side

__all__ = ["WORKLOAD"]

SIZES = {
    "smoke": {"rate": 200, "seconds": 0.2},
    "quick": {"rate": 500, "seconds": 4.0},
    "full": {"rate": 1_000, "seconds": 20.0},
}


async def run(ctx: Context) -> RunOutput:
    """One run (pending the read side)."""
    require_read_side()
    raise NotAvailable("lag workload not written yet: fill in bench/workloads/lag.py")


WORKLOAD = Workload(
    name="lag",
    summary="live projector lag (commit to applied) under a fixed write load",
    run=run,
    sizes=SIZES,
)
