"""The project's error tree.

Every error the project raises derives from :class:`ActorsourcingError`. The
root lives here, in the modelling kit, because ``aggregates`` is the one
package that both ``stores`` and ``runtime`` may import (see DESIGN.md); each
package defines its own branch and re-exports the root::

    ActorsourcingError
    ├── ModelError                     (aggregates: domain modelling)
    │   ├── DomainError                a handler rejected a command (subclass it)
    │   ├── RegistrationError          bad aggregate/event/upcaster declaration
    │   │   ├── DuplicateEventType     two classes claim one type name
    │   │   └── UpcasterGap            an upcaster chain has a hole
    │   ├── UnknownEventType           a stored type name no class claims
    │   ├── UnknownSchemaVersion       a stored schema version we cannot upcast
    │   └── InvalidHandlerResult       a handler returned something not events
    ├── StoreError                     (stores: see stores/_errors.py)
    └── ActorError                     (runtime: see runtime/_errors.py)
"""

from __future__ import annotations

__all__ = [
    "ActorsourcingError",
    "DomainError",
    "DuplicateEventType",
    "InvalidHandlerResult",
    "ModelError",
    "RegistrationError",
    "UnknownEventType",
    "UnknownSchemaVersion",
    "UpcasterGap",
]


class ActorsourcingError(Exception):
    """Root of every error raised by actorsourcing."""


class ModelError(ActorsourcingError):
    """An error from the modelling kit (aggregates, events, registry)."""


class DomainError(ModelError):
    """A handler rejected a command; subclass it for your domain's rejections.

    Raising it (or any exception) from a command handler records nothing and
    leaves the aggregate's state untouched; the caller of ``ask`` receives it.
    """


class RegistrationError(ModelError):
    """An aggregate, event or upcaster declaration is invalid."""


class DuplicateEventType(RegistrationError):
    """Two event classes claim the same stable type name."""


class UpcasterGap(RegistrationError):
    """An event's upcaster chain does not reach its current schema version."""


class UnknownEventType(ModelError):
    """A stored event's type name is claimed by no registered class."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"no event class is registered under the type name {type_name!r}")
        self.type_name = type_name


class UnknownSchemaVersion(ModelError):
    """A stored event's schema version cannot be upcast to the class's version."""

    def __init__(self, type_name: str, schema_version: int, current: int) -> None:
        super().__init__(
            f"event {type_name!r} was stored with schema version {schema_version}, "
            f"but this code knows versions 1..{current} (no upcaster path)"
        )
        self.type_name = type_name
        self.schema_version = schema_version
        self.current = current


class InvalidHandlerResult(ModelError):
    """A command handler returned something that is not events (or a Reply)."""
