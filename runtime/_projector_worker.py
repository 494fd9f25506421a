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

_Job = tuple[asyncio.AbstractEventLoop, Callable[..., Any], tuple[Any, ...], Done, bool]


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

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done, pipelined: bool
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
        self._jobs.put((loop, fn, args, done, pipelined))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fn, args, done, pipelined = job
            ok, value = True, SKIPPED
            if not (pipelined and self._failed):
                try:
                    value = fn(*args)
                except BaseException as exc:  # handed to the loop, re-raised there
                    ok, value = False, exc
                    self._failed = self._failed or pipelined
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

    def pipeline(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done) -> None:
        """Queue ``fn(*args)`` without waiting; ``done(ok, value)`` runs on the loop after it.

        If an earlier pipelined call failed and :meth:`rearm` has not been
        called since, ``fn`` is not run and ``done(True, SKIPPED)`` is called.
        """
        self._submit(fn, args, done, True)

    def rearm(self) -> None:
        """Run pipelined calls again after a failure (call once none is queued)."""
        self._failed = False

    def stop(self) -> None:
        """End the thread once the calls queued so far are done (idempotent)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
