"""The sending API of :class:`~runtime.Runtime`: ``ask``, ``ask_nowait`` and ``tell``.

A mixin so the command path reads as one unit; ``Runtime.__init__`` sets the
attributes it declares.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

from aggregates import Aggregate, Command
from runtime._address import Address
from runtime._directory import Directory
from runtime._errors import (
    AskTimeout,
    InvalidAddress,
    InvalidArgument,
    Overloaded,
    RuntimeClosed,
    UnknownCategory,
    UnknownCommand,
)
from runtime._mailbox import Deadlines, Message
from runtime._outcome import Outcome
from runtime._scheduler import Scheduler
from runtime._turns import Turns

__all__ = ["Sending"]

_SLOTTED_TIMEOUT = 1.0
"""Ask timeouts from this long share a timer per slot (up to 50 ms late); shorter ones get
their own, exact."""
_SLOTTED_MAX = 1e9
"""Longer timeouts (decades) get their own timer: slot numbers must stay convertible to float."""
_INF = math.inf


# Also checks Runtime's constructor options (imported there); it lives here because
# ask's timeout check calls it and _runtime imports this module, not the reverse.
def _positive(name: str, value: Any, *, integer: bool) -> None:
    ok = type(value) is int if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a positive {'int' if integer else 'number'}")


class Sending:
    """Queues commands on actors: :meth:`ask`, :meth:`ask_nowait` and :meth:`tell`."""

    # Set by Runtime.__init__; declared (not assigned) here so mypy checks the
    # mixin on its own. Bare annotations create no class attributes.
    _state: str
    _kinds: dict[str, type[Aggregate]]
    _mailbox_size: int
    _deadlines: Deadlines
    _directory: Directory
    _turns: Turns
    _scheduler: Scheduler
    _loop: asyncio.AbstractEventLoop | None  # the loop the runtime runs on, once entered

    def _submit(
        self,
        address: Address | str,
        command: Command,
        command_id: str | None,
        correlation_id: str | None,
        causation_id: str | None,
        future: asyncio.Future[Outcome] | None,
        wait: bool,
    ) -> None:
        """Validate and queue one command (no await: atomic on the event loop)."""
        if self._state != "open":
            raise RuntimeClosed("the runtime is not running (enter it with `async with`)")
        if address.__class__ is not Address:
            if not isinstance(address, str):
                raise InvalidAddress(f"an address is an Address or 'Category/id', not {address!r}")
            address = Address.parse(address)
        kind = self._kinds.get(address.category)
        if kind is None:
            raise UnknownCategory(address.category)
        if type(command) not in kind.__command_handlers__:
            raise UnknownCommand(address.category, type(command))
        if command_id is not None or correlation_id is not None or causation_id is not None:
            for name, value in (
                ("command_id", command_id),
                ("correlation_id", correlation_id),
                ("causation_id", causation_id),
            ):
                if value is not None and (not isinstance(value, str) or not value):
                    raise InvalidArgument(f"{name} must be a non-empty str or None, not {value!r}")
        actor = self._directory.get_or_create(address, kind)
        msg = Message(command, future, command_id, correlation_id, causation_id)
        mailbox = actor.mailbox
        if mailbox is None:
            mailbox = actor.mailbox = deque()
        if len(mailbox) >= self._mailbox_size or actor.overflow:
            if not wait:
                raise Overloaded(address, self._mailbox_size)
            if actor.overflow is None:
                actor.overflow = deque()
            actor.overflow.append(msg)
        else:
            mailbox.append(msg)
        if not actor.scheduled:
            actor.scheduled = True
            self._turns.busy += 1
            self._scheduler.schedule(actor)

    async def ask(
        self,
        address: Address | str,
        command: Command,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the public API takes a timeout
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Outcome:
        """Send a command and wait for its outcome (after its events are committed).

        Waits for room when the actor's mailbox is full (backpressure).

        Args:
            address: The target (``Address`` or ``"Category/id"``).
            command: A command the aggregate handles.
            timeout: Seconds to wait for the outcome (``None``: forever).
                Timeouts of a second or more are checked in 50 ms slots (one
                timer per slot, not per ask), so they fire up to 50 ms late.
            command_id: Idempotency key: a repeat returns the original outcome
                (``duplicate=True``) and records nothing, across restarts. It is
                stored with the command's events; a command that recorded none
                (a query, a rejection) is not remembered and a repeat runs again.
                Ids are global: a repeat sent to another address returns the
                original outcome too, its ``address`` the one it ran at.
            correlation_id: Stored in the events' metadata.
            causation_id: Stored in the events' metadata.

        Returns:
            The :class:`Outcome`: recorded events, new version, positions, reply value.

        Raises:
            InvalidAddress, UnknownCategory, UnknownCommand, InvalidArgument:
                bad input; nothing was queued.
            RuntimeClosed: the runtime is not running.
            AskTimeout: no outcome in time; the command may still complete.
            ActorStopped: the runtime stopped before the command completed.
            Exception: what the handler raised (nothing recorded), or a store
                error such as ``SerializationError`` (nothing written).
        """
        if timeout is not None and not (timeout.__class__ is float and 0.0 < timeout < _INF):
            _positive("timeout", timeout, integer=False)  # the full check, off the common path
        # The runtime's own loop: asyncio.get_running_loop() costs a getpid()
        # system call per call on Python 3.11 (its fork check).
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._submit(address, command, command_id, correlation_id, causation_id, future, True)
        if timeout is None:
            return await future
        if _SLOTTED_TIMEOUT <= timeout <= _SLOTTED_MAX:
            slot = self._deadlines.add(loop, future, address, timeout)
            try:
                return await future
            finally:
                slot.pop(future, None)
                if not slot:
                    # An emptied dict keeps its grown table until the slot's timer
                    # fires (up to the timeout later); clear() releases it now.
                    slot.clear()
        handle = loop.call_later(timeout, _expire, future, address, timeout)
        try:
            return await future
        finally:
            handle.cancel()

    def ask_nowait(
        self,
        address: Address | str,
        command: Command,
        *,
        timeout: float | None = None,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> asyncio.Future[Outcome]:
        """Queue a command without waiting for room; await the returned future for the outcome.

        Args and outcome as :meth:`ask`.

        Raises:
            Overloaded: the mailbox is full; nothing was queued.
        """
        if timeout is not None:
            _positive("timeout", timeout, integer=False)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._submit(address, command, command_id, correlation_id, causation_id, future, False)
        if timeout is not None:
            handle = loop.call_later(timeout, _expire, future, address, timeout)
            future.add_done_callback(lambda _: handle.cancel())
        return future

    def tell(
        self,
        address: Address | str,
        command: Command,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> None:
        """Queue a command and do not wait; a failure goes to :meth:`dead_letters`.

        A full mailbox refuses it (``Overloaded``, recorded as a dead letter).

        Raises:
            InvalidAddress, UnknownCategory, UnknownCommand, InvalidArgument,
            RuntimeClosed: bad input or no runtime; nothing was queued.
        """
        try:
            self._submit(address, command, command_id, correlation_id, causation_id, None, False)
        except Overloaded as exc:
            self._turns.dead_letter(exc.address, command, exc, command_id)


def _expire(future: asyncio.Future[Any], address: Any, timeout: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(address, timeout))
