"""The event type registry: stable type names, schema versions and upcasting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aggregates._aggregate import Aggregate
from aggregates._errors import (
    DuplicateEventType,
    ModelError,
    RegistrationError,
    UnknownEventType,
    UnknownSchemaVersion,
    UpcasterGap,
)
from aggregates._messages import Event

__all__ = ["EventRegistry"]


class EventRegistry:
    """Maps stable type names to event classes and upcasts stored payloads.

    Built once at start-up; registering fails fast if two classes claim one
    name (:class:`DuplicateEventType`) or an upcaster chain has a hole
    (:class:`UpcasterGap`).
    """

    def __init__(self, events: Iterable[type[Event]] = ()) -> None:
        self._by_name: dict[str, type[Event]] = {}
        for cls in events:
            self.register(cls)

    def register(self, cls: type[Event]) -> None:
        """Register an event class under its type name (idempotent for one class)."""
        if not (isinstance(cls, type) and issubclass(cls, Event)) or cls is Event:
            raise RegistrationError(f"expected an Event subclass, got {cls!r}")
        name = cls.__event_type__
        existing = self._by_name.get(name)
        if existing is cls:
            return
        if existing is not None:
            raise DuplicateEventType(
                f"event type name {name!r} is claimed by both "
                f"{existing.__module__}.{existing.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        missing = [v for v in range(1, cls.__schema_version__) if v not in cls.__upcasters__]
        if missing:
            raise UpcasterGap(
                f"event {name!r} is at schema version {cls.__schema_version__} but has no "
                f"upcaster from version(s) {missing}"
            )
        self._by_name[name] = cls

    def register_aggregate(self, aggregate: type[Aggregate]) -> None:
        """Register every event class the aggregate applies."""
        for cls in aggregate.event_types():
            self.register(cls)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> Mapping[str, type[Event]]:
        """A read-only view of the registered names and classes."""
        return dict(self._by_name)

    def decode(self, type_name: str, schema_version: int, data: dict[str, Any]) -> Event:
        """Build the event object for a stored payload, upcasting it first.

        Raises:
            UnknownEventType: no class is registered under ``type_name``.
            UnknownSchemaVersion: the stored version is newer than the class's.
            ModelError: the (upcast) payload does not fit the class's fields.
        """
        cls = self._by_name.get(type_name)
        if cls is None:
            raise UnknownEventType(type_name)
        current = cls.__schema_version__
        if schema_version != current:
            if not 1 <= schema_version < current:
                raise UnknownSchemaVersion(type_name, schema_version, current)
            for version in range(schema_version, current):
                data = cls.__upcasters__[version](data)
        if data.keys() == cls.__field_names__:
            # Fast path: the payload holds exactly the fields, so fill the
            # frozen instance's __dict__ directly (about 4x cheaper than __init__).
            obj = object.__new__(cls)
            object.__setattr__(obj, "__dict__", data)
            return obj
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(
                f"stored payload of {type_name!r} (schema {schema_version}) does not fit "
                f"{cls.__qualname__}: {exc}"
            ) from exc
