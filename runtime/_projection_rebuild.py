"""Rebuild a SQLite read model beside the live one, then swap it in.

The rebuild writes a new generation file from position 0 while the live
projector and its queries carry on with the old one. Once the copy has
caught up, the live projector is held between two batches, the copy takes
the last few events, and the pointer file is replaced (atomic rename); the
live projector then goes on from the copy's checkpoint. A rebuild is how a
fixed handler is applied to history; a failure during it leaves the live
read model untouched.

The copy is written with ``PRAGMA synchronous=OFF``: nobody reads it before
the swap and a crash merely leaves a file that the next start deletes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import structlog

from runtime._bus import Page
from runtime._projection_errors import ProjectorNotRunning, RebuildFailed
from runtime._projection_sqlite import SQLiteProjector, _SQLiteSink
from runtime._projection_sqlite_file import remove_generation
from runtime._projection_types import FailurePolicy
from runtime._projector_pipeline import drain
from runtime._projector_sink import EventFailed
from stores import RecordedEvent

__all__ = ["RebuildProgress", "rebuild"]

_log = structlog.get_logger("runtime.rebuild")

ProgressCallback = Callable[["RebuildProgress"], None]


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """How far a rebuild has come.

    Attributes:
        projector: The projector's name.
        position: The log position the new copy reflects.
        head: The log head as the bus knows it.
        events: Events handed to the handler so far.
        elapsed: Seconds since the rebuild started.
        rate: Log positions per second so far.
        eta_seconds: Estimated seconds to reach the head (None before a rate is known).
        done: True once the copy was swapped in.
    """

    projector: str
    position: int
    head: int
    events: int
    elapsed: float
    rate: float
    eta_seconds: float | None
    done: bool


class _Reporter:
    """Progress to a callback, a rich bar on a terminal, or log lines otherwise."""

    def __init__(self, name: str, callback: ProgressCallback | None, display: bool | None) -> None:
        self.name = name
        self.callback = callback
        self.started = time.monotonic()
        self.last_line = self.started
        self.bar: Any = None
        self.task: Any = None
        show = sys.stderr.isatty() if display is None else display
        if show:
            try:
                from rich.progress import Progress  # optional: the `bench` extra
            except ImportError:
                show = False
            else:
                self.bar = Progress(transient=False)
                self.bar.start()
                self.task = self.bar.add_task(f"rebuild {name}", total=None)

    def report(self, position: int, head: int, events: int, done: bool = False) -> RebuildProgress:
        elapsed = time.monotonic() - self.started
        rate = position / elapsed if elapsed > 0 else 0.0
        eta = (max(head - position, 0) / rate) if rate > 0 else None
        progress = RebuildProgress(self.name, position, head, events, elapsed, rate, eta, done)
        if self.callback is not None:
            self.callback(progress)
        if self.bar is not None:
            self.bar.update(self.task, completed=position, total=max(head, position))
        elif done or time.monotonic() - self.last_line >= 1.0:
            self.last_line = time.monotonic()
            _log.info(
                "rebuild progress",
                projector=self.name,
                position=position,
                head=head,
                events=events,
                events_per_s=round(rate),
                eta_s=None if eta is None else round(eta, 1),
                done=done,
            )
        return progress

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def _apply(
    projector: SQLiteProjector,
    sink: _SQLiteSink,
    events: Sequence[RecordedEvent],
    position: int,
) -> None:
    """Apply a page to the copy with the projector's retry and failure policy."""
    i = 0
    while i < len(events):
        try:
            await sink.apply(events[i:], position)
            return
        except EventFailed as failed:
            j = i + failed.index
            if j > i:
                await sink.apply(events[i:j], events[j - 1].position)
                i = j
            event, error, attempts = events[i], failed.error, 1
            while attempts < projector.max_attempts:
                await anyio.sleep(
                    min(projector.retry_backoff * 2 ** (attempts - 1), projector.max_backoff)
                )
                attempts += 1
                try:
                    await sink.apply([event], event.position)
                except EventFailed as again:
                    error = again.error
                else:
                    break
            else:
                if projector.policy is FailurePolicy.PARK and failed.handler:
                    await sink.park(event, error, attempts)
                else:
                    raise RebuildFailed(
                        f"rebuild of {projector.name!r} failed at position {event.position} "
                        f"({event.type}) after {attempts} attempt(s): {error!r}"
                    ) from error
            i += 1


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _as_rebuild_error(name: str, exc: Exception) -> Exception:
    if isinstance(exc, RebuildFailed | ProjectorNotRunning):
        return exc
    if isinstance(exc, anyio.EndOfStream | anyio.ClosedResourceError):
        failed = RebuildFailed(f"rebuild of {name!r}: the bus closed")
    else:
        failed = RebuildFailed(f"rebuild of {name!r} failed: {exc!r}")
    failed.__cause__ = exc
    return failed


async def rebuild(
    projector: SQLiteProjector,
    *,
    progress: ProgressCallback | None = None,
    display: bool | None = None,
    page_size: int = 5000,
) -> RebuildProgress:
    """Rebuild a running SQLite projector's read model from position 0 and swap it in.

    Queries read the old read model until the swap. The live projector is
    held only for the last few events before the swap.

    Args:
        projector: A :class:`SQLiteProjector` running in an engine.
        progress: Called with a :class:`RebuildProgress` after every page.
        display: Show a rich progress bar (default: when stderr is a
            terminal and rich is installed; otherwise log lines each second).
        page_size: Events per read and per transaction.

    Returns:
        The final progress (``done=True``).

    Raises:
        ProjectorNotRunning: the projector is not running in an engine.
        RebuildFailed: the handler failed (STOP policy) or the copy could not
            be written, or another rebuild of it is running; the live read
            model is untouched.
    """
    bus, lock, live_sink = projector._bus, projector._lock, projector._sink
    if bus is None or lock is None or not isinstance(live_sink, _SQLiteSink) or not bus._open:
        raise ProjectorNotRunning(f"projector {projector.name!r} is not running")
    if projector._rebuilding:
        raise RebuildFailed(f"a rebuild of {projector.name!r} is already running")
    projector._rebuilding = True
    try:
        return await _rebuild(projector, progress, display, page_size)
    finally:
        projector._rebuilding = False


async def _rebuild(
    projector: SQLiteProjector,
    progress: ProgressCallback | None,
    display: bool | None,
    page_size: int,
) -> RebuildProgress:
    bus, lock = projector._bus, projector._lock
    assert bus is not None
    assert lock is not None
    generation = projector.generation + 1
    file = projector._new_file(generation, synchronous="OFF")
    await anyio.to_thread.run_sync(remove_generation, file.path)
    await anyio.to_thread.run_sync(file.open)
    sink = _SQLiteSink(file, context=projector._thread_context())
    reporter = _Reporter(projector.name, progress, display)
    events = 0
    swapped = False
    try:
        async with (
            bus.subscribe(
                0,
                types=projector.types,
                categories=projector.categories,
                page_size=page_size,
                max_batch=page_size,
            ) as subscription,
            anyio.create_task_group() as task_group,
        ):
            # Read the next page (store thread, decoding) while this one is
            # applied (read-model thread): the two overlap on two cores.
            send, receive = anyio.create_memory_object_stream[Page](2)

            async def read_ahead() -> None:
                async with send:
                    async for page in subscription:
                        await send.send(page)

            task_group.start_soon(read_ahead)
            position = 0
            async with receive:
                # An empty log (nothing to copy, the live projector at 0) yields no
                # page at all: go straight to the swap.
                if bus.head > 0 or projector.position > 0:
                    async for page in receive:
                        await _apply(projector, sink, page.events, page.position)
                        events += len(page.events)
                        position = page.position
                        reporter.report(position, bus.head, events)
                        # A last page that is exactly full leaves the subscription
                        # reading the log (live is set by the next, empty read, which
                        # yields no page): reaching the head is enough to stop here.
                        if position >= projector.position and (
                            subscription.live or position >= bus.head
                        ):
                            break
                # Hold the live projector between batches: it cannot move now,
                # so the copy only has to reach where it stands.
                async with lock:
                    # Batches the live projector queued are applied first, so
                    # its position is final while we hold the lock.
                    await drain(projector)
                    while position < projector.position:
                        page = await receive.receive()
                        await _apply(projector, sink, page.events, page.position)
                        events += len(page.events)
                        position = page.position
                    await anyio.to_thread.run_sync(file.set_synchronous, "NORMAL")
                    current = projector._sink
                    assert current is not None
                    projector._sink = await projector._swap(current, sink)
                    projector._restart_from(position)
                    swapped = True
                task_group.cancel_scope.cancel()
        return reporter.report(position, bus.head, events, done=True)
    except BaseExceptionGroup as group:
        # The read-ahead task group wraps errors; report a lone one as itself.
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            error = _as_rebuild_error(projector.name, leaves[0])
            error.__suppress_context__ = True  # keeps __cause__, hides the group
            raise error from error.__cause__
        raise
    except Exception as exc:
        error = _as_rebuild_error(projector.name, exc)
        if error is exc:
            raise
        raise error from exc
    finally:
        reporter.close()
        if not swapped:
            with anyio.CancelScope(shield=True):
                await sink.aclose()  # the file, then the copy's thread
                await anyio.to_thread.run_sync(remove_generation, file.path)
