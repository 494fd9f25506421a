"""Measurement primitives: samples of one run, figures over repeated runs, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Figure",
    "LatencyRecorder",
    "NotAvailable",
    "RunOutput",
    "Sample",
    "Stat",
    "WorkloadResult",
    "collect",
    "percentile",
]


class NotAvailable(Exception):
    """A workload cannot run here: a dependency has not landed or does not apply."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ascending values, linearly interpolated.

    Same definition as numpy's default ("linear"): rank ``q/100 * (n-1)``.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = q / 100 * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


class LatencyRecorder:
    """Collects durations (seconds) of operations and summarises them in ms."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        """Record one duration."""
        self.values.append(seconds)

    def extend(self, other: Iterable[float]) -> None:
        """Record many durations."""
        self.values.extend(other)

    def summary(self, qs: Iterable[float] = (50, 99)) -> dict[str, float]:
        """Percentiles (and ``max``) in milliseconds, keyed ``p50``, ``p99``, ..."""
        ordered = sorted(self.values)
        out = {f"p{q:g}": percentile(ordered, q) * 1000 for q in qs}
        out["max"] = ordered[-1] * 1000
        return out


def now() -> float:
    """A monotonic clock with the best resolution available (seconds)."""
    return time.perf_counter()


@dataclass(frozen=True, slots=True)
class Sample:
    """One figure measured in one run.

    Attributes:
        case: What was measured (``"c=100 events/s"``); stable across runs.
        value: The measured value.
        unit: Its unit (``"events/s"``, ``"ms"``, ``"bytes"``...).
        ref: A reference measured in the *same* run (the raw floor or the other
            library), so the ratio ``value / ref`` is computed within one run.
        ref_kind: What ``ref`` is, when set: ``"floor"`` (plain ``sqlite3``),
            ``"theirs"`` (the other library), ``"read"`` (reading the same
            rows) or ``"bare"`` (the bare group-commit loop).
        params: The sizes behind this figure (concurrency, counts...).
    """

    case: str
    value: float
    unit: str
    ref: float | None = None
    ref_kind: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunOutput:
    """What one run of a workload returns.

    Attributes:
        samples: The figures measured.
        series: Curves for plots, ``name -> [(x, y), ...]`` (e.g. rebuild progress).
        info: Facts about the run worth keeping (batch sizes, settings checked).
    """

    samples: list[Sample] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stat:
    """Median and spread (min-max) of repeated values."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summarise values (at least one)."""
        return cls(statistics.median(values), min(values), max(values))

    def as_dict(self) -> dict[str, float]:
        """``{"median", "min", "max"}``."""
        return {"median": self.median, "min": self.low, "max": self.high}


@dataclass(frozen=True)
class Figure:
    """One case of a workload over all repeats."""

    workload: str
    case: str
    unit: str
    samples: tuple[float, ...]
    params: Mapping[str, Any]
    ref_kind: str | None = None
    ref_samples: tuple[float, ...] = ()

    @property
    def stat(self) -> Stat:
        """Median and spread of the measured values."""
        return Stat.of(self.samples)

    @property
    def ref_stat(self) -> Stat | None:
        """Median and spread of the reference values, when measured."""
        return Stat.of(self.ref_samples) if self.ref_samples else None

    @property
    def ratio_stat(self) -> Stat | None:
        """Median and spread of ``ours / reference``, each ratio taken within one run."""
        if not self.ref_samples:
            return None
        ratios = [v / r for v, r in zip(self.samples, self.ref_samples, strict=True) if r]
        return Stat.of(ratios) if ratios else None


@dataclass
class WorkloadResult:
    """A workload's outcome: its figures, or why it did not run."""

    name: str
    status: str  # "ok", "not available", "failed"
    sizes: Mapping[str, Any]
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    seconds: float = 0.0


def collect(name: str, sizes: Mapping[str, Any], runs: Sequence[RunOutput]) -> WorkloadResult:
    """Merge the runs of one workload into figures (one per case, in first-seen order).

    Raises:
        ValueError: the runs do not measure the same cases with the same units.
    """
    order: list[str] = []
    by_case: dict[str, list[Sample]] = {}
    for run in runs:
        for s in run.samples:
            if s.case not in by_case:
                order.append(s.case)
                by_case[s.case] = []
            by_case[s.case].append(s)
    figures = []
    for case in order:
        got = by_case[case]
        if len(got) != len(runs) or len({s.unit for s in got}) != 1:
            raise ValueError(f"{name}: case {case!r} was not measured once per run in one unit")
        refs = tuple(s.ref for s in got if s.ref is not None)
        figures.append(
            Figure(
                workload=name,
                case=case,
                unit=got[0].unit,
                samples=tuple(s.value for s in got),
                params=dict(got[0].params),
                ref_kind=got[0].ref_kind if len(refs) == len(got) else None,
                ref_samples=refs if len(refs) == len(got) else (),
            )
        )
    last = runs[-1] if runs else RunOutput()
    return WorkloadResult(name, "ok", sizes, figures, last.series, last.info)
