"""Progress reporting: rich bars on a terminal, plain lines in CI logs."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["PlainProgress", "Progress", "ProgressTask", "RichProgress", "make_progress"]


class ProgressTask(Protocol):
    """One long step: ``advance`` as work completes, ``done`` at the end."""

    def advance(self, n: int = 1) -> None:
        """Count ``n`` units of work done."""

    def done(self) -> None:
        """Mark the step finished."""


class Progress(Protocol):
    """Starts progress tasks."""

    def task(self, label: str, total: int) -> ProgressTask:
        """Start a step of ``total`` units."""


class _PlainTask:
    """Prints a line at start, at each quarter, and at the end (cheap to advance)."""

    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self._label, self._total, self._quiet = label, max(total, 1), quiet
        self._n = 0
        self._next = self._total // 4 or 1
        self._t0 = time.perf_counter()
        self._say(f"{label}: {total:,} ...")

    def _say(self, text: str) -> None:
        if not self._quiet:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    def advance(self, n: int = 1) -> None:
        self._n += n
        if self._n >= self._next and self._n < self._total:
            self._say(f"{self._label}: {self._n * 100 // self._total}%")
            self._next += self._total // 4 or 1

    def done(self) -> None:
        self._say(f"{self._label}: done in {time.perf_counter() - self._t0:.2f} s")


class PlainProgress:
    """Plain lines on stderr (not a terminal, or rich missing); ``quiet`` prints nothing."""

    def __init__(self, quiet: bool = False) -> None:
        self._quiet = quiet

    def task(self, label: str, total: int) -> ProgressTask:
        """Start a step that prints its progress as lines."""
        return _PlainTask(label, total, self._quiet)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _RichTask:
    """Pushes counts to rich at most every 1% (advance stays a few ns on the hot path)."""

    def __init__(self, progress: Any, label: str, total: int) -> None:
        self._p = progress
        self._id = progress.add_task(label, total=max(total, 1))
        self._n = 0
        self._step = max(total // 100, 1)
        self._next = self._step

    def advance(self, n: int = 1) -> None:
        self._n += n
        if self._n >= self._next:
            self._p.update(self._id, completed=self._n)
            self._next = self._n + self._step

    def done(self) -> None:
        self._p.update(self._id, completed=self._n, visible=False)


class RichProgress:
    """Rich progress bars on stderr; the bars vanish when their step ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as _Progress

        # Few refreshes a second: the refresh thread takes the GIL from the
        # workload being measured.
        self._p = _Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=True,
        )

    def task(self, label: str, total: int) -> ProgressTask:
        """Start a bar."""
        return _RichTask(self._p, label, total)

    def __enter__(self) -> Self:
        self._p.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._p.stop()


def make_progress(quiet: bool = False) -> PlainProgress | RichProgress:
    """Rich bars when stderr is a terminal and rich is installed, else plain lines."""
    if not quiet and sys.stderr.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress(quiet)
