"""Immutable message bases: :class:`Event`, :class:`Command` and :class:`Reply`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, dataclass_transform

from aggregates._errors import RegistrationError

__all__ = ["Command", "Event", "Reply", "upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass_transform(frozen_default=True)
class Event:
    """Base of domain events: subclasses become frozen dataclasses.

    Class keywords:
        name: The stable type name stored in the log (default: the class's
            ``__qualname__``). Give one explicitly so a class rename does not
            orphan stored events.
        version: The payload's schema version (default 1). Raising it needs an
            upcaster from each older version (see :func:`upcaster`).

    Example::

        class Deposited(Event, name="Account.Deposited"):
            amount: int
    """

    __event_type__: ClassVar[str]
    __schema_version__: ClassVar[int]
    __upcasters__: ClassVar[dict[int, Upcaster]]
    __field_names__: ClassVar[frozenset[str]]

    def __init_subclass__(cls, *, name: str | None = None, version: int = 1, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if type(version) is not int or version < 1:
            raise RegistrationError(f"{cls.__qualname__}: version must be an int >= 1")
        if name is not None and (not isinstance(name, str) or not name):
            raise RegistrationError(f"{cls.__qualname__}: name must be a non-empty str")
        dataclasses.dataclass(frozen=True)(cls)
        cls.__event_type__ = name or cls.__qualname__
        cls.__schema_version__ = version
        cls.__upcasters__ = {}
        cls.__field_names__ = frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


@dataclass_transform(frozen_default=True)
class Command:
    """Base of commands: subclasses become frozen dataclasses.

    Example::

        class Deposit(Command):
            amount: int
    """

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        dataclasses.dataclass(frozen=True)(cls)


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns to answer with a value as well as (or instead of) events.

    Attributes:
        value: The answer, handed to the caller in the outcome. Stored with
            the command id (so it must be JSON-encodable) when events are recorded.
        events: Events to record (none for a pure query).
    """

    value: Any = None
    events: tuple[Event, ...] = ()


def upcaster(event: type[Event], from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning ``event``'s payload from ``from_version`` to the next.

    Chains apply on read: a version-1 payload of a version-3 event passes the
    1->2 then the 2->3 upcaster. Registry start-up fails with ``UpcasterGap``
    if a link is missing.

    Example::

        @upcaster(Deposited, from_version=1)
        def _add_currency(data: dict) -> dict:
            return {**data, "currency": "EUR"}
    """
    if not (isinstance(event, type) and issubclass(event, Event)):
        raise RegistrationError(f"upcaster needs an Event subclass, not {event!r}")
    if type(from_version) is not int or not 1 <= from_version < event.__schema_version__:
        raise RegistrationError(
            f"{event.__qualname__}: an upcaster from version {from_version!r} must be "
            f"between 1 and {event.__schema_version__ - 1}"
        )

    def register(fn: Upcaster) -> Upcaster:
        if from_version in event.__upcasters__:
            raise RegistrationError(
                f"{event.__qualname__}: two upcasters from version {from_version}"
            )
        event.__upcasters__[from_version] = fn
        return fn

    return register
