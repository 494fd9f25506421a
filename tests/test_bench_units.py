"""The benchmark harness's own pieces, without a benchmark run: percentiles, collecting
repeats, the CLI's errors, a missing dependency, the lag pairing."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from bench._cli import main
from bench._context import MODES, Context, Workload
from bench._measure import NotAvailable, RunOutput, Sample, collect, percentile
from bench._progress import PlainProgress
from bench._run import run_workload
from bench.workloads import WORKLOADS
from bench.workloads.lag import lags


def test_percentile_interpolates_linearly() -> None:
    """Percentiles use the linear (numpy default) definition."""
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0


def test_collect_gives_median_spread_and_per_run_ratios() -> None:
    """Figures hold every repeat; ratios are taken within each run, then summarised."""
    runs = [
        RunOutput([Sample("x", v, "ops/s", ref=r, ref_kind="floor")])
        for v, r in ((10, 20), (30, 40), (20, 80))
    ]
    (fig,) = collect("w", {}, runs).figures
    assert fig.stat.median == 20
    assert (fig.stat.low, fig.stat.high) == (10, 30)
    assert fig.ratio_stat is not None
    assert fig.ratio_stat.median == 0.5  # ratios 0.5, 0.75, 0.25
    assert (fig.ratio_stat.low, fig.ratio_stat.high) == (0.25, 0.75)


def test_collect_rejects_a_case_missing_from_a_run() -> None:
    """A case measured in some runs only is an error, not a silently short median."""
    runs = [RunOutput([Sample("x", 1, "ms")]), RunOutput([Sample("y", 1, "ms")])]
    with pytest.raises(ValueError, match="once per run"):
        collect("w", {}, runs)


def test_every_workload_has_sizes_for_every_mode() -> None:
    """smoke, quick and full sizes exist for each registered workload."""
    for workload in WORKLOADS.values():
        assert set(workload.sizes) == set(MODES), workload.name


def test_unknown_workload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown workload name exits with status 2 and names the choices."""
    with pytest.raises(SystemExit) as exc:
        main(["no-such-workload"])
    assert exc.value.code == 2
    assert "append" in capsys.readouterr().err


def test_not_available_inside_a_task_group_is_reported(tmp_path: Path) -> None:
    """A workload whose dependency is missing reports 'not available', not a failure."""

    async def run(ctx: Context) -> RunOutput:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_missing)
        return RunOutput()

    async def _missing() -> None:
        raise NotAvailable("stores.Thing not landed")

    wl = Workload("fake", "a fake", run, {m: {} for m in MODES})
    ctx = Context("smoke", "sqlite", "", tmp_path, PlainProgress(quiet=True))
    result = anyio.run(run_workload, ctx, wl, 1)
    assert (result.status, result.reason) == ("not available", "stores.Thing not landed")


def test_lags_pair_each_commit_with_the_first_read_model_commit_covering_it() -> None:
    """An event's lag runs from its store commit to the first read-model position at or past it."""
    commits = [(1, 2, 10.0), (3, 3, 11.0)]
    applied = [(1, 10.5), (3, 12.0)]
    assert lags(commits, applied).values == [0.5, 2.0, 1.0]


def test_lags_refuse_an_event_that_never_reached_the_read_model() -> None:
    """A committed position beyond the read model's last one is an error, not a lost sample."""
    with pytest.raises(RuntimeError, match="position 3 never reached"):
        lags([(1, 3, 1.0)], [(2, 1.5)])
