"""What ``ask`` returns (:class:`Outcome`) and what ``tell`` loses (:class:`DeadLetter`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stores import RecordedEvent

__all__ = ["DeadLetter", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a command, delivered after its events were committed.

    Attributes:
        address: The actor that ran it (an :class:`~runtime.Address`).
        events: The recorded events, in order (empty when the handler decided none).
        version: The stream version after the command.
        positions: The global positions of ``events`` (empty range when none).
        value: The handler's :class:`~aggregates.Reply` value, or ``None``.
        duplicate: ``True`` when the command id was already recorded: this is
            the original outcome, read back from the store; nothing ran or was written.
    """

    address: Any
    events: tuple[RecordedEvent, ...]
    version: int
    positions: range
    value: Any = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A ``tell`` whose command failed or was never accepted (nobody was waiting for it).

    Attributes:
        address: The target address.
        command: The command.
        error: The exception it failed with.
        command_id: Its command id, if any.
        at: When it failed (UTC).
    """

    address: Any
    command: Any
    error: BaseException
    command_id: str | None
    at: datetime
