"""Turn scheduling: a ready queue of actors drained by a pool of long-lived workers.

An idle actor owns no task. When its mailbox goes from empty to non-empty it
joins the ready queue; a parked worker is woken (an ``asyncio`` future set,
a few microseconds) or, if none is parked, a new worker is started in the
runtime's task group (anyio ``start_soon`` costs ~38 us, paid only when the
pool grows). Workers await the store while running a turn, so the pool grows
to the number of actors with a command in flight: that is what lets the store
group-commit many actors' appends in one transaction. Surplus parked workers
are retired by :meth:`Scheduler.trim`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from runtime._actor import Actor

__all__ = ["Scheduler"]


class Scheduler:
    """The ready queue and worker pool.

    Args:
        turn: Runs one turn of an actor (a batch of its queued commands).
        max_workers: The most workers (actors running a turn at once).
    """

    __slots__ = (
        "_idle",
        "_low_water",
        "_ready",
        "_scopes",
        "_tg",
        "_turn",
        "max_workers",
        "workers",
    )

    def __init__(self, turn: Callable[[Actor], Awaitable[None]], max_workers: int) -> None:
        self._turn = turn
        self._ready: deque[Actor] = deque()
        self._idle: deque[asyncio.Future[bool]] = deque()
        self._tg: TaskGroup | None = None
        self.max_workers = max_workers
        self.workers = 0
        self._low_water = 0  # fewest parked workers seen since the last trim
        self._scopes: set[anyio.CancelScope] = set()

    def start(self, tg: TaskGroup) -> None:
        """Start workers in ``tg`` from now on."""
        self._tg = tg

    def schedule(self, actor: Actor) -> None:
        """Queue ``actor`` for a turn and make sure a worker will take it."""
        self._ready.append(actor)
        idle = self._idle
        if len(idle) <= self._low_water:
            self._low_water = len(idle) - 1 if idle else 0
        while idle:
            # LIFO: the most recently parked worker is the likeliest to be warm.
            waiter = idle.pop()
            if not waiter.done():
                waiter.set_result(True)
                return
        if self.workers < self.max_workers and self._tg is not None:
            self.workers += 1
            self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        ready = self._ready
        idle = self._idle
        turn = self._turn
        # Shielded: cancelling the code around ``async with Runtime`` must not
        # kill turns mid-command; the runtime drains, then retires the workers
        # (stop) or, past its deadline, cancels them itself (cancel).
        with anyio.CancelScope(shield=True) as scope:
            self._scopes.add(scope)
            try:
                while True:
                    while ready:
                        await turn(ready.popleft())
                    waiter: asyncio.Future[bool] = loop.create_future()
                    idle.append(waiter)
                    if not await waiter:
                        return
            finally:
                self._scopes.discard(scope)
                self.workers -= 1

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
