"""The modelling kit: aggregates, events, commands, the event registry, upcasters.

Pure Python: no I/O, no anyio, no store.
"""

from __future__ import annotations

from aggregates._aggregate import Aggregate as Aggregate
from aggregates._aggregate import applies as applies
from aggregates._aggregate import handles as handles
from aggregates._errors import ActorsourcingError as ActorsourcingError
from aggregates._errors import DomainError as DomainError
from aggregates._errors import DuplicateEventType as DuplicateEventType
from aggregates._errors import InvalidHandlerResult as InvalidHandlerResult
from aggregates._errors import ModelError as ModelError
from aggregates._errors import RegistrationError as RegistrationError
from aggregates._errors import UnknownEventType as UnknownEventType
from aggregates._errors import UnknownSchemaVersion as UnknownSchemaVersion
from aggregates._errors import UpcasterGap as UpcasterGap
from aggregates._messages import Command as Command
from aggregates._messages import Event as Event
from aggregates._messages import Reply as Reply
from aggregates._messages import upcaster as upcaster
from aggregates._registry import EventRegistry as EventRegistry

__all__ = [
    "Aggregate",
    "Command",
    "Event",
    "Reply",
    "handles",
    "applies",
    "upcaster",
    "EventRegistry",
    # errors
    "ActorsourcingError",
    "ModelError",
    "DomainError",
    "RegistrationError",
    "DuplicateEventType",
    "UpcasterGap",
    "UnknownEventType",
    "UnknownSchemaVersion",
    "InvalidHandlerResult",
]
