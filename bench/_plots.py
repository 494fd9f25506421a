"""The Markdown report and its PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._measure import Figure, WorkloadResult
from bench._report import COLUMNS, rows

__all__ = ["write_report"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # render to files; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _by_concurrency(
    results: Sequence[WorkloadResult], unit_suffix: str, word: str
) -> dict[str, list[Figure]]:
    """Figures per series label whose params carry a concurrency and whose unit/case match."""
    out: dict[str, list[Figure]] = {}
    for res in results:
        for fig in res.figures:
            if "concurrency" in fig.params and fig.unit.endswith(unit_suffix) and word in fig.case:
                rest = fig.case.split(" ", 1)[1]
                name = rest if rest.startswith(res.name) else f"{res.name} {rest}"
                label = f"{name} ({fig.unit})"
                out.setdefault(label, []).append(fig)
    return out


def _errbar(ax: Any, figs: list[Figure], label: str, ref: bool = False, style: str = "o-") -> None:
    figs = sorted(figs, key=lambda f: f.params["concurrency"])
    xs = [f.params["concurrency"] for f in figs]
    stats = [f.ref_stat if ref else f.stat for f in figs]
    ys = [s.median for s in stats if s]
    if len(ys) != len(xs):
        return
    lows = [s.median - s.low for s in stats if s]
    highs = [s.high - s.median for s in stats if s]
    ax.errorbar(xs, ys, yerr=[lows, highs], fmt=style, capsize=3, label=label)


def _concurrency_axis(ax: Any, series: dict[str, list[Figure]]) -> None:
    """Log x axis ticked at the measured concurrencies, written as plain numbers."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    xs = sorted({f.params["concurrency"] for figs in series.values() for f in figs})
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrent callers")


def _throughput(results: Sequence[WorkloadResult], path: Path) -> bool:
    series = _by_concurrency(results, "/s", "throughput")
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, figs in series.items():
        _errbar(ax, figs, label)
        if all(f.ref_stat for f in figs):
            _errbar(ax, figs, f"{label}: raw sqlite3 floor", ref=True, style="s--")
    _concurrency_axis(ax, series)
    ax.set(yscale="log", ylabel="per second")
    ax.set_title("Throughput against concurrency (median, bars: min-max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency(results: Sequence[WorkloadResult], path: Path) -> bool:
    series = _by_concurrency(results, "ms", " p")
    fixed = [f for r in results if r.name == "latency" for f in r.figures if f.unit == "ms"]
    if not series and not fixed:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, figs in series.items():
        _errbar(left, figs, label)
    if series:
        _concurrency_axis(left, series)
    left.set(yscale="log", ylabel="ms")
    left.set_title("Latency percentiles against concurrency")
    left.grid(True, which="both", alpha=0.3)
    if series:
        left.legend(fontsize=7)
    if fixed:
        names = [f.case.replace("ask ", "") for f in fixed]
        meds = [f.stat.median for f in fixed]
        errs = [
            [f.stat.median - f.stat.low for f in fixed],
            [f.stat.high - f.stat.median for f in fixed],
        ]
        right.bar(names, meds, yerr=errs, capsize=4)
        rate = fixed[0].params.get("rate")
        right.set_title(f"Ask latency at a fixed load ({rate}/s)")
        right.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _read_rate(result: WorkloadResult) -> float | None:
    """The run's read + decode rate (events/s), when the workload measured one."""
    for fig in result.figures:
        if fig.case.startswith("read + decode"):
            return fig.stat.median
    return None


def _rebuild(results: Sequence[WorkloadResult], path: Path) -> bool:
    found = [r for r in results if "rebuild progress" in r.series]
    if not found:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in found:
        points = res.series["rebuild progress"]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, label=f"{res.name} (last run)")
        rate = _read_rate(res)
        if rate and ys[-1]:
            # Where reading and decoding alone would be at each moment.
            end = ys[-1] / rate
            ax.plot([0, end], [0, ys[-1]], "--", label="read + decode alone (median rate)")
    ax.set(xlabel="seconds", ylabel="position applied", title="Rebuild progress over time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _md_table(results: Sequence[WorkloadResult]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(results)]
    return lines


def write_report(directory: Path, meta: dict[str, Any], results: Sequence[WorkloadResult]) -> Path:
    """Write ``report.md`` and its PNGs into ``directory``; return the Markdown file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = [
        ("throughput.png", "Throughput against concurrency", _throughput),
        ("latency.png", "Latency percentiles", _latency),
        ("rebuild.png", "Rebuild progress over time", _rebuild),
    ]
    lines = ["# actorsourcing benchmark report", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items()]
    lines += ["", "## Results", "", *_md_table(results), ""]
    lines += [
        "Median of the repeats; spread is min-max. *ratio* = ours / reference, computed",
        "within each run then summarised (reference *floor*: plain sqlite3 executemany",
        "of the same rows -- events and new streams rows -- into the same schema, in",
        "transactions of the store's mean batch, with the store's pragmas; *read*:",
        "reading and decoding the same log with `store.iter_all` (rebuild) or the same",
        "stream with `store.read_stream` (activate); *theirs*: the `eventsourcing`",
        "library on the same disk and durability). Rows suffixed `(gc_threshold=None)`",
        "ran on a runtime that leaves Python's GC settings alone; the others on the default",
        "(generation-0 threshold held at `runtime.DEFAULT_GC_THRESHOLD` while open).",
        "`lag` rows, one sample per event from the store's commit (its commit listener):",
        "`lag to read-model commit` ends at the read model's COMMIT (the projector's",
        "`on_commit` hook, on its thread); `lag p50/p99/max` ends when a task awaiting",
        "`wait_for` sees it (adds the event loop's delay). Both are in the latency plot.",
        "",
    ]
    for filename, title, draw in plots:
        lines += [f"## {title}", ""]
        if draw(results, directory / filename):
            lines += [f"![{title}]({filename})", ""]
        else:
            lines += ["_No data in this run (workload not run or not available yet)._", ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
