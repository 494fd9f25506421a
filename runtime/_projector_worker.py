"""A read model's own long-lived thread: blocking calls in order, zero loop hops to start.

``anyio.to_thread.run_sync`` costs two event-loop iterations before the
worker thread even sees the call (a checkpoint and the capacity limiter's
shielded checkpoint) and two after it (the thread-safe callback resolves a
future, whose callback then resumes the task). Under heavy write load one
iteration runs hundreds of resumed callers, so each hop costs milliseconds.
A :class:`SinkWorker` puts the call on a thread-safe queue (the thread starts
it at once) and reports back with ONE ``call_soon_threadsafe``: to a future
for :meth:`SinkWorker.call`, or straight to a callback for
:meth:`SinkWorker.pipeline`, which lets a projector hand batch N+1 over while
batch N is still being applied.

**The GIL hand-off.** A read model's handler is Python: its thread needs
the GIL for every event, and takes it back after every ``conn.execute``
(the sqlite3 module releases it around each step). While the event loop is
busy (hundreds of callers resumed per group commit) CPython hands the GIL
to a waiting thread only when the loop blocks or after the switch interval
(5 ms) has passed, so a batch that needs ~2.5 ms of CPU took a median 11.7 ms
and up to 88 ms of wall time under the 1,000-caller benchmark: that was the
read model's live lag. So for a batch of at least :data:`HANDOFF_MIN_EVENTS`
events (usually a sign that the loop is under load) from the live feed (the sink
passes 0 for catch-up and rebuild pages, which must not hold writers back),
:meth:`SinkWorker.pipeline` blocks the loop on the batch's completion for up
to :data:`HANDOFF_WAIT`, which hands the GIL to the read model's thread for
that long: the batch
runs at its uncontended speed, and the loop loses about the CPU time the
thread would have taken from it in slices anyway (measured: the write load
sustained beside the projector went up, not down). A batch that is not
done in time (a slow or blocking handler) is not waited for further, and
the next 1, 2, 4 ... up to :data:`HANDOFF_MAX_SKIP` batches are queued
without waiting, so a slow projector costs writers at most one
``HANDOFF_WAIT`` per that many batches; the first batch done in time
resets the back-off. Small batches (light load) never wait: there the loop
is mostly idle and the thread gets the GIL at once. A batch that large at
light load (one command recording many events) holds the loop's other tasks
for about the time the thread takes to apply and commit it (~2.5 ms of CPU
for 500 events here, plus the commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio

__all__ = ["SKIPPED", "SinkWorker"]

T = TypeVar("T")

SKIPPED: Final = object()
"""The outcome of a pipelined call dropped because an earlier pipelined call failed."""

Done = Callable[[bool, Any], None]
"""``done(ok, value)``: the result (``ok``) or the exception, called on the loop."""

_Job = tuple[
    asyncio.AbstractEventLoop,
    Callable[..., Any],
    tuple[Any, ...],
    Done,
    bool,
    threading.Event | None,
]

HANDOFF_MIN_EVENTS = 16
"""Events in a pipelined batch from which the loop hands the GIL over (waits for it).

The size from which ``SQLiteStore(writer="auto")`` commits in its writer
process (``stores._sqlite_writer.LARGE_BATCH``): from there on no writer
thread makes the loop yield the GIL, so the loop can be busy with batches of
that size. At 64 (set when the process took only batches of 64+), 100
callers sending deposits (50-event batches, in the writer process since
12-06) left a read model 91-301 ms behind at p99 (to its commit), against
2.1-18.5 ms at 16 with the same write load; at 1,000 callers 11-23 ms with
64 and 12-17 ms with 16 in three of four interleaved runs (66 ms in one).
"""
HANDOFF_WAIT = 0.025
"""Seconds the loop waits at most for a handed-off batch."""
HANDOFF_MAX_SKIP = 64
"""The most batches queued without waiting after hand-offs that timed out."""


class SinkWorker:
    """Runs one read model's blocking calls on a thread of its own, in submission order.

    The thread starts with the first call and ends after :meth:`stop`.

    Args:
        name: Names the thread (for debuggers and thread dumps).
        context: The context variables every call sees (a new thread starts
            with an empty context, unlike a task, which copies its starter's).
            None: an empty context.
    """

    def __init__(self, name: str, context: contextvars.Context | None = None) -> None:
        self._name = name
        self._context = context
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Set on the thread when a pipelined call raises: the pipelined calls
        # queued behind it were built on its outcome, so they are skipped
        # (SKIPPED) until the owner has dealt with the failure and rearms.
        self._failed = False
        # The hand-off's back-off (see the module docstring): batches left to
        # queue without waiting, and how many to skip after the next timeout.
        self._skip = 0
        self._backoff = 1
        self.handoffs = 0  # batches the loop waited for and saw done in time
        self.handoff_timeouts = 0  # batches it stopped waiting for

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        done: Done,
        pipelined: bool,
        finished: threading.Event | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            # The whole loop runs inside the context, so calls pay nothing for
            # it. A copy per thread: a Context can be entered by one thread at
            # a time, and a stopped thread may still be finishing its queue.
            context = contextvars.Context() if self._context is None else self._context.copy()
            self._thread = threading.Thread(
                target=context.run, args=(self._work,), name=self._name, daemon=True
            )
            self._thread.start()
        self._jobs.put((loop, fn, args, done, pipelined, finished))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fn, args, done, pipelined, finished = job
            ok, value = True, SKIPPED
            if not (pipelined and self._failed):
                try:
                    value = fn(*args)
                except BaseException as exc:  # handed to the loop, re-raised there
                    ok, value = False, exc
                    self._failed = self._failed or pipelined
            if finished is not None:
                finished.set()  # the loop may be blocked waiting for this (hand-off)
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done, ok, value)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and return its result (or raise its error).

        The wait is shielded: a cancelled caller still waits for the call
        (a COMMIT or ROLLBACK) to finish, so it never runs unobserved.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def done(ok: bool, value: Any) -> None:
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        self._submit(fn, args, done, False)
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def pipeline(
        self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done, events: int = 0
    ) -> None:
        """Queue ``fn(*args)``; ``done(ok, value)`` runs on the loop after it.

        Returns at once, except for a batch of at least
        :data:`HANDOFF_MIN_EVENTS` ``events``: then it blocks the loop (and so
        hands the GIL to this thread) until the call is done, for at most
        :data:`HANDOFF_WAIT` (see the module docstring).

        If an earlier pipelined call failed and :meth:`rearm` has not been
        called since, ``fn`` is not run and ``done(True, SKIPPED)`` is called.
        """
        if events < HANDOFF_MIN_EVENTS:
            self._submit(fn, args, done, True)
            return
        if self._skip:
            self._skip -= 1
            self._submit(fn, args, done, True)
            return
        finished = threading.Event()
        self._submit(fn, args, done, True, finished)
        # Event.wait blocks without the GIL: the thread runs the batch uncontended.
        if finished.wait(HANDOFF_WAIT):
            self.handoffs += 1
            self._backoff = 1
        else:
            self.handoff_timeouts += 1
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, HANDOFF_MAX_SKIP)

    def rearm(self) -> None:
        """Run pipelined calls again after a failure (call once none is queued)."""
        self._failed = False

    def stop(self) -> None:
        """End the thread once the calls queued so far are done (idempotent)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
