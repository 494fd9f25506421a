"""The one process-wide setting a store or runtime holds: the cyclic GC's generation-0 threshold.

Why they touch it at all: under hundreds of concurrent appends or commands,
every one in flight holds a few GC-tracked objects (futures, coroutine
frames, messages, events) across its group commit. At CPython's default
generation-0 threshold (700 allocations) they outlive a young collection,
get promoted to the middle and then the oldest generation, and trigger full
collections that walk every live actor. Measured on the 1,000-caller write
benchmark: ~21 us of GC per command (of ~70 us), 70 ms full-collection
pauses, and 1.3-1.9x the p99 latency; at a threshold of 10,000 the same
objects die young and the GC costs ~1.6 us per command. With the turns' fast
path (fewer, shorter-lived objects per command) 50,000 did better again:
in three interleaved pairs of runs at 1,000 callers, 25.5k/28.2k/33.3k
commands/s at 10,000 against 27.5k/47.6k/39.1k at 50,000, with the GC's own
time down from 113-135 ms to 4-11 ms per 100,000 commands, and ~5% fewer
instructions per command (callgrind). A young collection walks only what
is young, so its pauses stay short; a cycle of garbage waits for up to
50,000 allocations (a few MB) before it is freed. CPython itself moved
this way (3.13 raised the default to 2,000; 3.14's incremental collector
works differently again), and large Python services commonly raise it.
The same holds one layer down: 1,000 appenders straight on ``SQLiteStore``
ran at 57-68k events/s at the default threshold and ~76k at 10,000.

What it does, and no more: while at least one store or runtime that asked for
it is open, generation 0's threshold is at least the largest value asked for (a
higher one set by the application is kept, and the other two thresholds are
never touched). When the last such holder closes, the thresholds found by
the first one are put back, unless someone changed them meanwhile: then
theirs stand. A disabled GC stays disabled: ``gc.disable()`` is a separate
switch, and a threshold of 0 (which also turns automatic collection off) is
left at 0.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

__all__ = ["DEFAULT_GC_THRESHOLD", "check_gc_threshold", "hold_gc_threshold"]

DEFAULT_GC_THRESHOLD = 50_000
"""The generation-0 threshold a store or runtime holds unless given ``gc_threshold=None``."""

# Process-wide state shared by every open holder (the thresholds are global too).
_holders: list[int] = []  # the threshold each open holder asked for
_original: tuple[int, int, int] | None = None  # found by the first holder
_ours: tuple[int, int, int] | None = None  # what we last set, to detect outside changes


def check_gc_threshold(value: object) -> None:
    """Raise ValueError unless ``value`` is a positive int or None (a store's ``gc_threshold``)."""
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"gc_threshold must be a positive int or None, not {value!r}")


def hold_gc_threshold(threshold: int) -> Callable[[], None]:
    """Raise generation 0's threshold to at least ``threshold`` until the returned release.

    Args:
        threshold: Allocations between young collections (a positive int).

    Returns:
        A callable that releases this hold (call it once, on close).
    """
    global _original, _ours
    current = gc.get_threshold()
    if not _holders:
        _original = current
    elif current != _ours:
        # Changed from outside since we last set it: theirs becomes what we restore.
        _original = current
    _holders.append(threshold)
    if 0 < current[0] < threshold:
        gc.set_threshold(threshold, *current[1:])
    _ours = gc.get_threshold()
    released = False

    def release() -> None:
        nonlocal released
        global _original, _ours
        if released:
            return
        released = True
        _holders.remove(threshold)
        now = gc.get_threshold()
        if now != _ours:
            # The application changed the thresholds while we held them: keep theirs.
            _original = _ours = None if not _holders else now
            return
        target = _original
        if _holders:
            # Others still hold: keep the largest value still asked for (or the
            # original, if that is higher).
            assert target is not None
            wanted = max(max(_holders), target[0])
            if now[0] != wanted and target[0] != 0:
                gc.set_threshold(wanted, *now[1:])
            _ours = gc.get_threshold()
            return
        _original = _ours = None
        if target is not None and now != target:
            gc.set_threshold(*target)

    return release
