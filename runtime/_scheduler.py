"""Turn scheduling: a ready queue of actors drained by a pool of long-lived workers.

An idle actor owns no task. When its mailbox goes from empty to non-empty it
joins the ready queue; a parked worker is woken (an ``asyncio`` future set,
a few microseconds) or, if none is parked, a new worker is started in the
runtime's task group (anyio ``start_soon`` costs ~38 us, paid only when the
pool grows). A worker starts an actor's append and moves on to the next ready
actor (see ``runtime/_turns.py``): the append's callback puts the actor back
in the queue, so a few workers keep many actors' appends in flight, which the
store group-commits in one transaction. A worker awaits only a turn that
needs I/O (activation, a rejection's check, a retry), so the pool grows to
the number of those in flight. Surplus parked workers are retired by
:meth:`Scheduler.trim`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from runtime._actor import Actor

__all__ = ["Scheduler"]


class Scheduler:
    """The ready queue and worker pool.

    Args:
        step: Takes an actor's turn as far as it goes without awaiting; returns
            ``None``, or a coroutine (the rest of the turn) for the worker to await.
        max_workers: The most workers (actors running a turn at once).
    """

    __slots__ = (
        "_idle",
        "_low_water",
        "_ready",
        "_scopes",
        "_step",
        "_tg",
        "drainers",
        "max_workers",
        "workers",
    )

    def __init__(
        self, step: Callable[[Actor], Coroutine[Any, Any, None] | None], max_workers: int
    ) -> None:
        self._step = step
        self._ready: deque[Actor] = deque()
        self._idle: deque[asyncio.Future[bool]] = deque()
        self._tg: TaskGroup | None = None
        self.max_workers = max_workers
        self.workers = 0
        self.drainers = 0  # workers started or woken to drain ``_ready``, not parked
        self._low_water = 0  # fewest parked workers seen since the last trim
        self._scopes: set[anyio.CancelScope] = set()

    def start(self, tg: TaskGroup) -> None:
        """Start workers in ``tg`` from now on."""
        self._tg = tg

    def schedule(self, actor: Actor) -> None:
        """Queue ``actor`` for a turn and make sure a worker will take it."""
        self._ready.append(actor)
        if not self.drainers:
            self._add_drainer()

    def _add_drainer(self) -> None:
        """Wake a parked worker (or start one) to drain the ready queue."""
        idle = self._idle
        if len(idle) <= self._low_water:
            self._low_water = len(idle) - 1 if idle else 0
        while idle:
            # LIFO: the most recently parked worker is the likeliest to be warm.
            waiter = idle.pop()
            if not waiter.done():
                waiter.set_result(True)
                self.drainers += 1
                return
        if self.workers < self.max_workers and self._tg is not None:
            self.workers += 1
            self.drainers += 1
            self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        # Counted in ``drainers`` from when it is started or woken until it
        # parks, except while it awaits a turn that needs I/O: then another
        # worker takes over the queue, so no ready actor waits behind that I/O.
        loop = asyncio.get_running_loop()
        ready = self._ready
        idle = self._idle
        step = self._step
        # Shielded: cancelling the code around ``async with Runtime`` must not
        # kill turns mid-command; the runtime drains, then retires the workers
        # (stop) or, past its deadline, cancels them itself (cancel).
        with anyio.CancelScope(shield=True) as scope:
            self._scopes.add(scope)
            try:
                while True:
                    while ready:
                        rest = step(ready.popleft())
                        if rest is not None:
                            self.drainers -= 1
                            if ready and not self.drainers:
                                self._add_drainer()
                            try:
                                await rest
                            finally:
                                self.drainers += 1
                    self.drainers -= 1
                    waiter: asyncio.Future[bool] = loop.create_future()
                    idle.append(waiter)
                    try:
                        woken = await waiter
                    except BaseException:
                        self.drainers += 1  # the finally below counts it out
                        raise
                    if not woken:
                        self.drainers += 1
                        return
            finally:
                self._scopes.discard(scope)
                self.workers -= 1
                self.drainers -= 1

    def trim(self, keep: int) -> None:
        """Retire parked workers that stayed unused since the last trim, keeping ``keep``.

        Only workers that no schedule needed through the whole interval go (the
        low-water mark of the parked pool), so a pool sized for a steady load is
        not torn down and re-spawned between bursts.
        """
        idle = self._idle
        surplus = min(self._low_water, len(idle)) - keep
        while surplus > 0 and idle:
            surplus -= 1
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(False)
        self._low_water = len(idle)

    def stop(self) -> None:
        """Retire every parked worker (shutdown)."""
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def cancel(self) -> None:
        """Cancel every worker, busy or parked (shutdown past its deadline)."""
        for scope in list(self._scopes):
            scope.cancel()

    @property
    def parked(self) -> int:
        """Workers parked waiting for work."""
        return len(self._idle)
