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

__all__ = ["Message", "settle_error", "settle_result"]


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
