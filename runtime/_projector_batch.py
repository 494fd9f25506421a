"""How a projector applies one page: batch, split around a failure, retry, park or stop."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from runtime._bus import Page
from runtime._projection_types import FailurePolicy, ProjectorState
from runtime._projector_sink import EventFailed, Sink
from stores import RecordedEvent

if TYPE_CHECKING:
    from runtime._projector import Projector

__all__ = ["applied", "process_page", "retry_event"]

_log = structlog.get_logger("runtime.projector")


async def process_page(
    projector: Projector, page: Page, failure: EventFailed | None = None
) -> None:
    """Apply one page: the whole batch at once, or around a failing event.

    ``failure``: the page was already tried as one batch (queued on the
    sink's thread) and failed so; it counts as the first attempt.
    """
    sink = projector._sink
    assert sink is not None
    events = [e for e in page.events if e.position > projector._position]
    if not events:
        now = time.monotonic()
        if now - projector._last_save >= projector.checkpoint_interval:
            await sink.save(page.position)
            projector._saved, projector._last_save = page.position, now
        projector._advance(page.position)
        return
    i = 0
    while i < len(events):
        try:
            if failure is not None:
                first, failure = failure, None
                raise first
            await sink.apply(events[i:], page.position)
        except EventFailed as failed:
            j = i + failed.index
            if j > i:  # the events before the failed one are fine: commit them
                if failed.applied_prefix:
                    await sink.save(events[j - 1].position)
                else:
                    try:
                        await sink.apply(events[i:j], events[j - 1].position)
                    except EventFailed:
                        continue  # a handler that fails at random: start over
                applied(projector, events[i:j], events[j - 1].position)
                i = j
            if not await retry_event(projector, sink, events[i], failed):
                return
            i += 1
        else:
            applied(projector, events[i:], page.position)
            return


def applied(projector: Projector, events: Sequence[RecordedEvent], position: int) -> None:
    """Count a committed run of events and move the position past it."""
    projector._handled += len(events)
    projector._batches += 1
    projector._saved = position
    projector._last_save = time.monotonic()
    projector._advance(position, events)


async def retry_event(
    projector: Projector, sink: Sink, event: RecordedEvent, failed: EventFailed
) -> bool:
    """Retry one event with backoff; park it or stop. True when the projector goes on."""
    error, attempts = failed.error, 1
    while attempts < projector.max_attempts:
        await anyio.sleep(min(projector.retry_backoff * 2 ** (attempts - 1), projector.max_backoff))
        projector._retries += 1
        attempts += 1
        try:
            await sink.apply([event], event.position)
        except EventFailed as again:
            error = again.error
        else:
            applied(projector, [event], event.position)
            return True
    if projector.policy is FailurePolicy.PARK and failed.handler:
        await sink.park(event, error, attempts)
        projector._parked += 1
        projector._saved = event.position
        projector._advance(event.position, [event])
        _log.error(
            "event parked",
            projector=projector.name,
            position=event.position,
            type=event.type,
            error=repr(error),
        )
        return True
    projector._failure = (event, attempts, error)
    projector._state = ProjectorState.FAILED
    projector._notify()
    _log.error(
        "projector stopped on a failing event",
        projector=projector.name,
        position=event.position,
        type=event.type,
        error=repr(error),
    )
    return False
