"""The directory of live actors: lookup, least-recently-used order, passivation.

The live actors sit in one insertion-ordered ``dict``. An actor is moved to
the end when its turn ends (``pop`` + re-insert is O(1)), so iteration order
is least-recently-used first and ``last_used`` increases along it: the idle
sweep stops at the first actor that is not yet due, and the cap on live actors
evicts from the front.

Passivation is a plain ``del`` with no ``await``: on one event loop nothing
can enqueue to the actor while it is being dropped, so a message either finds
the old instance (which then is busy, so not dropped) or, afterwards, none (and
activates a fresh one from the log). There are never two live instances of
one address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aggregates import Aggregate
from runtime._actor import Actor
from runtime._address import Address

__all__ = ["Directory"]

_EVICT_SCAN = 64
"""How many least-recently-used actors the cap looks at per new actor."""


class Directory:
    """Live actors by address, in least-recently-used order.

    Args:
        max_actors: The cap on live actors; idle ones are passivated to stay under it
            (busy actors are never dropped, so the cap can be exceeded while all are busy).
    """

    __slots__ = ("_actors", "max_actors", "passivations")

    def __init__(self, max_actors: int) -> None:
        self._actors: dict[Address, Actor] = {}
        self.max_actors = max_actors
        self.passivations = 0

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[Actor]:
        return iter(list(self._actors.values()))

    def get(self, address: Address) -> Actor | None:
        """The live actor at ``address``, or None."""
        return self._actors.get(address)

    def get_or_create(self, address: Address, kind: type[Aggregate]) -> Actor:
        """The live actor at ``address``, creating an unactivated one if needed."""
        actor = self._actors.get(address)
        if actor is None:
            if len(self._actors) >= self.max_actors:
                self._evict(len(self._actors) - self.max_actors + 1)
            actor = Actor(address, kind, time.monotonic())
            self._actors[address] = actor
        return actor

    def touch(self, actor: Actor) -> None:
        """Mark ``actor`` most recently used (its turn just ended)."""
        actors = self._actors
        address = actor.address
        # Only the instance in the directory moves; a reset/replaced one is left alone.
        if actors.get(address) is actor:
            del actors[address]
            actors[address] = actor
        actor.last_used = time.monotonic()

    def _evict(self, count: int) -> None:
        """Passivate up to ``count`` idle actors from the least-recently-used end.

        Busy actors met on the way are moved to the most-recently-used end
        (they are in use now): left at the front, a crowd of long-busy actors
        would fill every scan and keep the cap from ever evicting again.
        """
        victims: list[Address] = []
        busy: list[Actor] = []
        for scanned, (address, actor) in enumerate(self._actors.items(), 1):
            if actor.scheduled:
                busy.append(actor)
            else:
                victims.append(address)
                if len(victims) >= count:
                    break
            if scanned >= _EVICT_SCAN:
                break
        for address in victims:
            del self._actors[address]
        for actor in busy:
            self.touch(actor)
        self.passivations += len(victims)

    def sweep(self, idle_timeout: float) -> int:
        """Passivate actors idle for longer than ``idle_timeout``; return how many."""
        deadline = time.monotonic() - idle_timeout
        victims: list[Address] = []
        for address, actor in self._actors.items():
            if actor.last_used > deadline:
                # LRU order: every later actor was used more recently.
                break
            if not actor.scheduled:
                victims.append(address)
        for address in victims:
            del self._actors[address]
        self.passivations += len(victims)
        return len(victims)

    def passivate(self, address: Address) -> bool:
        """Drop the actor at ``address`` if it is idle; return whether it was dropped."""
        actor = self._actors.get(address)
        if actor is None or actor.scheduled:
            return False
        del self._actors[address]
        self.passivations += 1
        return True
