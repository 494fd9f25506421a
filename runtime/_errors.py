"""Errors raised by the actor runtime.

Every runtime error derives from :class:`ActorError`, the runtime's branch of
the project's tree (the root lives in ``aggregates``)::

    ActorsourcingError                 (root, from aggregates)
    └── ActorError
        ├── InvalidAddress             category or id not a non-empty str (ValueError)
        ├── InvalidArgument            bad option, command id, timeout, load bound (ValueError)
        ├── UnknownCategory            no registered aggregate for an address's category
        ├── UnknownCommand             the aggregate has no handler for the command type
        ├── Overloaded                 the mailbox is full (ask_nowait, tell)
        ├── AskTimeout                 no reply in time; the command MAY STILL COMPLETE
        ├── RuntimeClosed              the runtime is not running (not entered, or closing)
        ├── ActorStopped               the runtime stopped before the command finished
        ├── ActivationFailed           the actor's state could not be rebuilt from the log
        ├── ConflictRetriesExhausted   other writers kept winning; carries the ConcurrencyError
        └── ProjectionError            read side (tree in runtime/_projection_errors.py)

Errors a command's handler raises (e.g. ``DomainError``) and store errors
(``SerializationError``, ``PayloadTooLarge``, ...) reach the caller of
``ask`` unchanged.
"""

from __future__ import annotations

from typing import Any

from aggregates import ActorsourcingError as ActorsourcingError
from stores import ConcurrencyError

__all__ = [
    "ActivationFailed",
    "ActorError",
    "ActorStopped",
    "ActorsourcingError",
    "AskTimeout",
    "ConflictRetriesExhausted",
    "InvalidAddress",
    "InvalidArgument",
    "Overloaded",
    "RuntimeClosed",
    "UnknownCategory",
    "UnknownCommand",
]


class ActorError(ActorsourcingError):
    """Root of every error raised by the actor runtime."""


class InvalidAddress(ActorError, ValueError):
    """An address's category or id is not a usable non-empty string."""


class InvalidArgument(ActorError, ValueError):
    """An argument is invalid: a runtime option, a command id, a timeout, a load bound."""


class UnknownCategory(ActorError, LookupError):
    """No aggregate type is registered for the address's category.

    Attributes:
        category: The category asked for.
    """

    def __init__(self, category: str) -> None:
        super().__init__(f"no aggregate is registered for the category {category!r}")
        self.category = category


class UnknownCommand(ActorError, LookupError):
    """The aggregate has no handler for the command's type (or it is not a Command).

    Attributes:
        category: The aggregate's category.
        command_type: The type of the rejected command.
    """

    def __init__(self, category: str, command_type: type) -> None:
        super().__init__(
            f"aggregate {category!r} has no handler for the command type "
            f"{command_type.__qualname__!r}"
        )
        self.category = category
        self.command_type = command_type


class Overloaded(ActorError):
    """The actor's mailbox is full; the command was not accepted (nothing will run).

    Attributes:
        address: The actor's address (an :class:`~runtime.Address`).
        size: The mailbox bound.
    """

    def __init__(self, address: Any, size: int) -> None:
        super().__init__(f"the mailbox of {address} is full ({size} commands)")
        self.address = address
        self.size = size


class AskTimeout(ActorError, TimeoutError):
    """No reply came within the timeout. The command may still complete.

    A timed-out command that was already in the actor's mailbox still runs
    and, if it succeeds, its events are recorded: retry with the same
    ``command_id`` to learn its outcome without running it twice.

    Attributes:
        address: The actor's address.
        timeout: The timeout in seconds.
    """

    def __init__(self, address: Any, timeout: float) -> None:
        super().__init__(
            f"no reply from {address} within {timeout} s; the command may still complete "
            "(retry with the same command_id to learn its outcome)"
        )
        self.address = address
        self.timeout = timeout


class RuntimeClosed(ActorError):
    """The runtime is not running (not yet entered, or shutting down)."""


class ActorStopped(ActorError):
    """The runtime stopped before this command's outcome was known.

    Raised at shutdown, once ``shutdown_timeout`` has passed, for commands still
    queued (they never ran) and for a command interrupted while its append was
    in flight (it may have been recorded: ask again with the same
    ``command_id`` after a restart to learn its outcome).
    """


class ActivationFailed(ActorError):
    """The actor's state could not be rebuilt from the log (the cause is chained).

    Attributes:
        address: The actor's address.
    """

    def __init__(self, address: Any, reason: str) -> None:
        super().__init__(f"activation of {address} failed: {reason}")
        self.address = address


class ConflictRetriesExhausted(ActorError):
    """Another writer kept appending to the stream first; the command was not recorded.

    Attributes:
        address: The actor's address.
        attempts: How many times the command ran.
        conflict: The last :class:`~stores.ConcurrencyError` (also chained as ``__cause__``).
    """

    def __init__(self, address: Any, attempts: int, conflict: ConcurrencyError) -> None:
        super().__init__(
            f"{address}: gave up after {attempts} attempts, another writer kept winning "
            f"({conflict})"
        )
        self.address = address
        self.attempts = attempts
        self.conflict = conflict
