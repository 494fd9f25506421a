"""Mailbox entries and the bounded-mailbox rules.

A mailbox is a plain ``collections.deque`` created on an actor's first
message and dropped when it drains (an idle actor holds none: a deque is most
of an idle actor's cost). Commands that find it full wait, in arrival order,
in the actor's ``overflow`` deque and move in as the actor takes commands
out, so ``ask`` gets backpressure without a second await and FIFO order holds
across the boundary.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime._errors import AskTimeout

__all__ = ["Deadlines", "Message", "settle_error", "settle_result"]

SLOT = 0.05
"""Width in seconds of one deadline slot: a slotted ask times out at most this late."""


class Message:
    """One command waiting in a mailbox.

    Attributes:
        command: The command object.
        future: The asker's future, or ``None`` for ``tell``.
        command_id: Idempotency key, if any.
        correlation_id: Correlation id for the events' metadata.
        causation_id: Causation id for the events' metadata.
    """

    __slots__ = ("causation_id", "command", "command_id", "correlation_id", "future")

    def __init__(
        self,
        command: Any,
        future: asyncio.Future[Any] | None,
        command_id: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> None:
        self.command = command
        self.future = future
        self.command_id = command_id
        self.correlation_id = correlation_id
        self.causation_id = causation_id

    def metadata(self) -> dict[str, str] | None:
        """The event metadata for this command's ids (``None`` when it has none)."""
        if self.command_id is None and self.correlation_id is None and self.causation_id is None:
            return None
        meta: dict[str, str] = {}
        if self.command_id is not None:
            meta["command_id"] = self.command_id
        if self.correlation_id is not None:
            meta["correlation_id"] = self.correlation_id
        if self.causation_id is not None:
            meta["causation_id"] = self.causation_id
        return meta


def settle_result(future: asyncio.Future[Any] | None, value: Any) -> None:
    """Resolve an asker's future unless it already gave up (timeout, cancellation)."""
    if future is not None and not future.done():
        future.set_result(value)


def settle_error(future: asyncio.Future[Any] | None, error: BaseException) -> None:
    """Fail an asker's future unless it already gave up (timeout, cancellation)."""
    if future is not None and not future.done():
        future.set_exception(error)


class Deadlines:
    """Ask timeouts with one timer per 50 ms slot instead of one per ask.

    ``loop.call_later`` per ask costs ~1.8 us here (a ``TimerHandle`` pushed on
    the loop's heap and, once the ask is answered, cancelled but left there
    until the loop prunes it), and with a 30 s timeout that handle lives long
    enough to be promoted to the cyclic GC's oldest generation. Asks with the
    same timeout whose deadlines fall in one slot share a dict and one timer
    at the slot's end: registering is two dict lookups and a store, answering
    removes the entry. A slotted ask times out up to :data:`SLOT` late, never
    early, so the runtime slots only timeouts of a second or more.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        # timeout -> slot number -> {future: address}
        self._slots: dict[float, dict[int, dict[asyncio.Future[Any], Any]]] = {}

    def __len__(self) -> int:
        return sum(len(s) for by_slot in self._slots.values() for s in by_slot.values())

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        address: Any,
        timeout: float,
    ) -> dict[asyncio.Future[Any], Any]:
        """Fail ``future`` with AskTimeout after ``timeout`` unless it is done by then.

        Returns:
            The slot holding it: ``slot.pop(future, None)`` once it is answered.
        """
        # The slot ends after the deadline: ceil-like, so never early.
        key = int((loop.time() + timeout) / SLOT) + 1
        by_slot = self._slots.get(timeout)
        if by_slot is None:
            by_slot = self._slots[timeout] = {}
        slot = by_slot.get(key)
        if slot is None:
            slot = by_slot[key] = {}
            loop.call_at(key * SLOT, self._expire, timeout, key)
        slot[future] = address
        return slot

    def _expire(self, timeout: float, key: int) -> None:
        by_slot = self._slots[timeout]
        slot = by_slot.pop(key)
        if not by_slot:
            del self._slots[timeout]
        for future, address in slot.items():
            if not future.done():
                future.set_exception(AskTimeout(address, timeout))
