"""Group-commit counters shared by every backend's writer."""

from __future__ import annotations

from types import MappingProxyType

from stores._types import StoreStatistics

__all__ = ["BatchCounters"]


class BatchCounters:
    """Counts committed batches, appends, events and conflicts.

    Attributes:
        conflicts: Appends rejected with ConcurrencyError (callers add to it).
    """

    __slots__ = ("_appends", "_batches", "_events", "_max_batch", "_sizes", "conflicts")

    def __init__(self) -> None:
        self._appends = self._batches = self._events = self._max_batch = 0
        self._sizes: dict[int, int] = {}
        self.conflicts = 0

    def committed(self, appends: int, events: int) -> None:
        """Record one committed transaction holding ``appends`` appends of ``events`` events."""
        self._batches += 1
        self._appends += appends
        self._events += events
        if appends > self._max_batch:
            self._max_batch = appends
        bucket = 1 << (appends.bit_length() - 1)  # powers of two: 1, 2-3 -> 2, 4-7 -> 4 ...
        self._sizes[bucket] = self._sizes.get(bucket, 0) + 1

    def snapshot(self) -> StoreStatistics:
        """An immutable snapshot of the counters."""
        return StoreStatistics(
            appends=self._appends,
            events=self._events,
            batches=self._batches,
            conflicts=self.conflicts,
            max_batch=self._max_batch,
            batch_sizes=MappingProxyType(dict(self._sizes)),
        )
