"""A projector's pipeline: hand batch N+1 to the read model while batch N is applied.

Without it the projector task awaits each batch: the read model's thread
idles while the completion travels back through the event loop and the
task collects the next page, and under heavy write load every loop
iteration runs hundreds of resumed callers. With it the task queues a page
on the sink's own thread (:meth:`Sink.pipeline`) and goes back to the bus at
once; the thread applies the queued batches back to back, each in its own
transaction with its checkpoint (exactly once), and each completion moves
the position and wakes ``wait_for`` straight from the thread's one
``call_soon_threadsafe``. While the task is idle, the next page does not
even wait for it: :func:`pump` queues it from the store's commit listener
(which runs before the committing callers are resumed) or from the previous
batch's completion.

What stays true: batches commit in queue order; ``position`` only moves
once a batch committed; a failed batch makes the thread skip every batch
queued after it, then the task applies the failed one the slow way (split,
retry, park or stop: :func:`process_page`, the first failure counted) and
re-reads the skipped ones from the log. Anything that needs the read model
quiet (the slow path, pause, reset, rebuild, stopping) first waits until no
batch is queued (:func:`drain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from runtime._bus import Page
from runtime._projector_batch import applied, process_page
from runtime._projector_sink import EventFailed
from runtime._projector_worker import SKIPPED
from stores import RecordedEvent

if TYPE_CHECKING:
    from runtime._bus import Subscription
    from runtime._projector import Projector

__all__ = ["DEPTH", "drain", "follow", "pump", "queue_page", "settle"]

DEPTH = 2
"""Batches queued at most: one being applied, one waiting (more only adds lag)."""


async def follow(projector: Projector, subscription: Subscription, epoch: int) -> None:
    """Apply the subscription's pages until it ends, the epoch changes or a batch failed."""
    assert projector._lock is not None
    sink = projector._sink
    if sink is not None and sink.pipelines:
        projector._pumping = (subscription, epoch)
        subscription._on_offer = partial(pump, projector)
    pages = aiter(subscription)
    while True:
        projector._awaiting_page = True
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            return
        finally:
            projector._awaiting_page = False
        await projector._wait_running()
        async with projector._lock:
            if epoch != projector._epoch:
                return  # reset or swapped while we waited
            if await queue_page(projector, page):
                continue  # its completion moves the position
            if await settle(projector):
                return  # pages queued after the failed one were skipped: re-read them
            await process_page(projector, page)
        if projector._failure is not None:
            await projector._wait_running()
            return  # re-read from the checkpoint (resume retries the event)


async def queue_page(projector: Projector, page: Page) -> bool:
    """Queue ``page`` on the sink's thread (the caller holds the lock); False: apply it yourself."""
    sink = projector._sink
    assert sink is not None
    events = page.events
    if not events or projector._pipe_failure is not None:
        return False
    if events[0].position <= max(projector._position, projector._submitted):
        return False  # overlaps what is applied or queued: the slow path filters it
    while projector._inflight >= DEPTH and projector._pipe_failure is None:
        await _changed(projector)
    if projector._pipe_failure is not None:
        return False
    done = partial(_done, projector, events, page.position)
    if not sink.pipeline(events, page.position, done, page.live):
        return False
    projector._inflight += 1
    projector._submitted = page.position
    return True


def pump(projector: Projector) -> None:
    """Queue the live buffer's next page right now, if the projector's task is idle.

    Runs on the store's commit listener (before the committing callers are
    resumed) and on each batch's completion, so a page reaches the read
    model's thread without waiting for the projector's task to get a loop
    turn. It only acts when the task is parked waiting for a page with
    nothing in hand (so pages are still queued in order), the lock is free
    (no pause, reset, rebuild swap or slow path is running), nothing failed
    and the pipeline has room; otherwise the task takes the page as usual.
    """
    pumping = projector._pumping
    if pumping is None:
        return
    subscription, epoch = pumping
    sink = projector._sink
    lock = projector._lock
    buffer = subscription._buffer
    if not (
        buffer
        and subscription.live
        and projector._awaiting_page
        and epoch == projector._epoch
        and projector._inflight < DEPTH
        and projector._pipe_failure is None
        and projector._failure is None
        and not projector._paused
        and sink is not None
        and sink.pipelines
        and lock is not None
        and not lock.locked()
        and buffer[0].position > max(projector._position, projector._submitted)
    ):
        return
    page = subscription._take_live()
    assert page is not None  # the buffer was not empty
    events = page.events
    try:
        done = partial(_done, projector, events, page.position)
        sink.pipeline(events, page.position, done, page.live)
    except Exception as exc:
        # The page left the subscription: record it as a failed batch, so the
        # task restarts from the position and reads it again (settle).
        _fail(projector, events, page.position, exc)
        return
    projector._inflight += 1
    projector._submitted = page.position


def _done(
    projector: Projector,
    events: Sequence[RecordedEvent],
    position: int,
    ok: bool,
    value: Any,
) -> None:
    """On the loop, once the thread is done with a queued batch."""
    projector._inflight -= 1
    if not ok:
        _fail(projector, events, position, value)
    elif value is not SKIPPED:
        applied(projector, events, position)
        pump(projector)  # what arrived meanwhile goes to the thread now
    event, projector._pipe_changed = projector._pipe_changed, None
    if event is not None:
        event.set()


def _fail(
    projector: Projector, events: Sequence[RecordedEvent], position: int, error: BaseException
) -> None:
    if projector._pipe_failure is not None:
        return  # the first failure decides; later batches were skipped
    projector._pipe_failure = (events, position, error)
    if projector._awaiting_page and projector._restart is not None:
        # The task waits for a page that may never come: restart its
        # subscription so it deals with the failure now (settle).
        projector._restart.cancel()


async def _changed(projector: Projector) -> None:
    if projector._pipe_changed is None:
        projector._pipe_changed = anyio.Event()
    await projector._pipe_changed.wait()


async def drain(projector: Projector) -> None:
    """Wait until no batch is queued (shielded: the thread finishes them anyway)."""
    with anyio.CancelScope(shield=True):
        while projector._inflight:
            await _changed(projector)


async def settle(projector: Projector) -> bool:
    """Drain; if a queued batch failed, apply it the slow way. True when one had failed.

    The caller holds the lock. The batches skipped after the failure are not
    applied: the caller re-subscribes from ``projector.position`` to read them again.
    """
    await drain(projector)
    failure = projector._pipe_failure
    if failure is None:
        return False
    projector._pipe_failure = None
    projector._submitted = projector._position
    assert projector._sink is not None
    projector._sink.rearm()
    events, position, error = failure
    if not isinstance(error, EventFailed):
        raise error  # the sink itself broke: the projector restarts after a backoff
    await process_page(projector, Page(events, position), error)
    return True
