"""Results out: the console table (rich or plain) and the JSON file."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench._measure import Figure, WorkloadResult

__all__ = ["fmt", "render_plain", "rows", "to_json", "print_table", "write_json"]

COLUMNS = ("workload", "case", "median", "spread (min-max)", "unit", "reference", "ours/ref")


def fmt(value: float) -> str:
    """A figure with sensible precision: 12,345 / 123 / 12.3 / 1.23 / 0.0123."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _figure_row(fig: Figure) -> tuple[str, ...]:
    st = fig.stat
    spread = f"{fmt(st.low)}-{fmt(st.high)}" if len(fig.samples) > 1 else "(1 run)"
    ref = fig.ref_stat
    ratio = fig.ratio_stat
    return (
        fig.workload,
        fig.case,
        fmt(st.median),
        spread,
        fig.unit,
        f"{fig.ref_kind} {fmt(ref.median)}" if ref else "",
        f"{ratio.median:.2f}x" if ratio else "",
    )


def rows(results: Sequence[WorkloadResult]) -> list[tuple[str, ...]]:
    """Table rows: one per figure, one per workload that did not run."""
    out: list[tuple[str, ...]] = []
    for res in results:
        if res.status != "ok":
            out.append((res.name, f"{res.status}: {res.reason}", "", "", "", "", ""))
        for fig in res.figures:
            out.append(_figure_row(fig))
    return out


def render_plain(results: Sequence[WorkloadResult]) -> str:
    """The table as aligned plain text (CI logs, pipes).

    A workload that did not run gets one line with its reason, which does not
    widen the columns of the figures.
    """
    body = rows(results)
    figures = [COLUMNS, *(r for r in body if r[2])]
    widths = [max(len(r[i]) for r in figures) for i in range(len(COLUMNS))]
    numeric = {2, 3, 5, 6}
    lines = []
    for r in [COLUMNS, *body]:
        if r is not COLUMNS and not r[2]:
            lines.append(f"{r[0].ljust(widths[0])}  {r[1]}")
            continue
        cells = [
            c.rjust(w) if i in numeric and r is not COLUMNS else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_table(results: Sequence[WorkloadResult], *, title: str) -> None:
    """Print the table: rich on a terminal (when installed), plain text otherwise."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            for i, col in enumerate(COLUMNS):
                table.add_column(col, justify="right" if i in {2, 3, 5, 6} else "left")
            for r in rows(results):
                table.add_row(*r)
            Console().print(table)
            return
    print(title)
    print(render_plain(results))


def _figure_json(fig: Figure) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case": fig.case,
        "unit": fig.unit,
        **fig.stat.as_dict(),
        "samples": list(fig.samples),
        "params": dict(fig.params),
    }
    ref, ratio = fig.ref_stat, fig.ratio_stat
    if ref is not None:
        out["reference"] = {
            "kind": fig.ref_kind,
            "unit": fig.unit,
            **ref.as_dict(),
            "samples": list(fig.ref_samples),
        }
    if ratio is not None:
        out["ratio"] = {**ratio.as_dict(), "definition": "ours / reference, within each run"}
    return out


def to_json(meta: dict[str, Any], results: Sequence[WorkloadResult]) -> dict[str, Any]:
    """The machine-readable document: metadata, then every workload's figures."""
    return {
        "meta": meta,
        "results": [
            {
                "workload": r.name,
                "status": r.status,
                "reason": r.reason,
                "seconds": r.seconds,
                "sizes": dict(r.sizes),
                "info": r.info,
                "figures": [_figure_json(f) for f in r.figures],
                "series": {k: [list(p) for p in v] for k, v in r.series.items()},
            }
            for r in results
        ],
    }


def write_json(path: Path, meta: dict[str, Any], results: Sequence[WorkloadResult]) -> None:
    """Write :func:`to_json` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(to_json(meta, results), option=orjson.OPT_INDENT_2, default=str)
    path.write_bytes(data)
