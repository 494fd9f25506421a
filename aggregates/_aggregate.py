"""The :class:`Aggregate` base and its handler/applier registration."""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self, TypeVar

from aggregates._errors import InvalidHandlerResult, RegistrationError
from aggregates._messages import Command, Event, Reply

__all__ = ["Aggregate", "applies", "handles"]

F = TypeVar("F", bound=Callable[..., Any])

_HANDLES = "__actorsourcing_handles__"
_APPLIES = "__actorsourcing_applies__"


def handles(fn: F) -> F:
    """Mark a method as the handler of the command type its parameter is annotated with.

    The handler reads ``self`` (the current state) and returns the events to
    record: one :class:`Event`, a list or tuple of them, ``None`` (nothing to
    record), or a :class:`Reply` carrying a value and events. Raise (ideally a
    :class:`DomainError`) to reject; the state is untouched either way, since
    only appliers change it.
    """
    setattr(fn, _HANDLES, True)
    return fn


def applies(fn: F) -> F:
    """Mark a method as the applier of the event type its parameter is annotated with.

    Appliers mutate ``self``; they run for new events and on replay, so they
    must be deterministic and must not fail for an event that was recorded.
    Give each applier a distinct method name.
    """
    setattr(fn, _APPLIES, True)
    return fn


def _defining_scope() -> dict[str, Any]:
    """The local names of the scope a class statement runs in (the first frame
    outside this module), so annotations naming classes defined in a function
    resolve too."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return dict(frame.f_locals) if frame is not None else {}


def _message_type(cls: type, fn: Callable[..., Any], base: type, scope: dict[str, Any]) -> type:
    """The type annotated on ``fn``'s first parameter after ``self``."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise RegistrationError(
            f"{cls.__qualname__}.{fn.__name__} must take (self, message), got {len(params)} params"
        )
    try:
        hints = typing.get_type_hints(fn, localns={**scope, **vars(cls), cls.__name__: cls})
    except NameError as exc:
        raise RegistrationError(
            f"{cls.__qualname__}.{fn.__name__}: cannot resolve its annotation ({exc}); "
            "define the message class before the aggregate"
        ) from exc
    target = hints.get(params[1].name)
    if not (isinstance(target, type) and issubclass(target, base)):
        raise RegistrationError(
            f"{cls.__qualname__}.{fn.__name__}: annotate its parameter with a "
            f"{base.__name__} subclass (got {target!r})"
        )
    return target


class Aggregate:
    """Base of event-sourced aggregates.

    ``__init__`` (called with no arguments) builds the initial state; command
    handlers (``@handles``) decide events; appliers (``@applies``) fold them
    into the state.

    Class keywords and attributes:
        category: The address category and stream prefix (default: class name).
        snapshot_every: Save a snapshot every N events (``None``: never).
        snapshot_schema_version: Bump it when the snapshot layout changes; a
            stored snapshot with another version is ignored (full replay).

    The default :meth:`snapshot` / :meth:`from_snapshot` store ``vars(self)``
    as JSON; override both for state that JSON does not round-trip.
    """

    category: ClassVar[str]
    snapshot_every: ClassVar[int | None] = None
    snapshot_schema_version: ClassVar[int] = 1
    __command_handlers__: ClassVar[dict[type[Command], Callable[[Any, Any], Any]]]
    __event_appliers__: ClassVar[dict[type[Event], Callable[[Any, Any], None]]]

    def __init_subclass__(cls, *, category: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if category is not None:
            cls.category = category
        elif "category" not in vars(cls):
            cls.category = cls.__name__
        name = cls.category
        if not isinstance(name, str) or not name or "-" in name or "/" in name:
            # '-' ends the category in a stream name, '/' in an address.
            raise RegistrationError(
                f"{cls.__qualname__}: category must be a non-empty str without '-' or '/',"
                f" not {name!r}"
            )
        if not name.isprintable():
            raise RegistrationError(f"{cls.__qualname__}: category {name!r} is not printable")
        handlers: dict[type[Command], Callable[[Any, Any], Any]] = {}
        appliers: dict[type[Event], Callable[[Any, Any], None]] = {}
        for klass in reversed(cls.__mro__):
            handlers.update(getattr(klass, "__command_handlers__", {}))
            appliers.update(getattr(klass, "__event_appliers__", {}))
        marked = [fn for fn in vars(cls).values() if hasattr(fn, _HANDLES) or hasattr(fn, _APPLIES)]
        scope = _defining_scope() if marked else {}
        for fn in marked:
            if getattr(fn, _HANDLES, False):
                handlers[_message_type(cls, fn, Command, scope)] = fn
            if getattr(fn, _APPLIES, False):
                appliers[_message_type(cls, fn, Event, scope)] = fn
        cls.__command_handlers__ = handlers
        cls.__event_appliers__ = appliers

    @classmethod
    def event_types(cls) -> tuple[type[Event], ...]:
        """The event classes this aggregate applies."""
        return tuple(cls.__event_appliers__)

    @classmethod
    def command_types(cls) -> tuple[type[Command], ...]:
        """The command classes this aggregate handles."""
        return tuple(cls.__command_handlers__)

    def handle(self, command: Command) -> tuple[list[Event], Any]:
        """Run the handler for ``command``; return ``(events, reply_value)``.

        Raises:
            LookupError: no handler for the command's type (the runtime
                raises ``UnknownCommand`` before getting here).
            InvalidHandlerResult: the handler returned something not events.
            Exception: whatever the handler raised to reject the command.
        """
        handler = self.__command_handlers__[type(command)]
        result = handler(self, command)
        return _normalise(type(self), command, result)

    def apply(self, event: Event) -> None:
        """Fold one event into the state (events of unknown type are ignored)."""
        applier = self.__event_appliers__.get(type(event))
        if applier is not None:
            applier(self, event)

    def apply_all(self, events: Iterable[Event]) -> None:
        """Fold events into the state, in order."""
        for event in events:
            self.apply(event)

    def snapshot(self) -> Any:
        """The state to store in a snapshot (JSON-encodable). Default: ``vars(self)``."""
        return dict(vars(self))

    @classmethod
    def from_snapshot(cls, state: Any) -> Self:
        """Rebuild an instance from :meth:`snapshot`'s output.

        Raises:
            ValueError: ``state`` is not a dict holding every attribute a new
                instance starts with (a snapshot taken before ``__init__``
                gained one, without a bump of ``snapshot_schema_version``):
                the runtime then replays the events in full instead.
        """
        obj = cls()
        if not isinstance(state, dict):
            raise ValueError(
                f"{cls.__qualname__}: a snapshot is a dict, not {type(state).__name__}"
            )
        missing = vars(obj).keys() - state.keys()
        if missing:
            raise ValueError(f"{cls.__qualname__}: the snapshot lacks {sorted(missing)}")
        obj.__dict__.update(state)
        return obj


def _normalise(cls: type, command: Command, result: Any) -> tuple[list[Event], Any]:
    if result is None:
        return [], None
    if isinstance(result, Event):
        return [result], None
    reply = None
    if isinstance(result, Reply):
        reply, result = result.value, result.events
    if isinstance(result, list | tuple) and all(isinstance(e, Event) for e in result):
        return list(result), reply
    raise InvalidHandlerResult(
        f"{cls.__qualname__}'s handler for {type(command).__qualname__} returned "
        f"{result!r}; return an Event, a list/tuple of Events, None, or a Reply"
    )
