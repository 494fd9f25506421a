"""The actor runtime: aggregates as addressable actors over an event store.

``Runtime`` hosts the actors; ``Address`` names one (``Account/42``); ``ask``
returns an ``Outcome`` after the command's events are committed.
"""

from __future__ import annotations

from runtime._address import Address as Address
from runtime._bus import EventBus as EventBus
from runtime._bus import Subscription as Subscription
from runtime._errors import ActivationFailed as ActivationFailed
from runtime._errors import ActorError as ActorError
from runtime._errors import ActorsourcingError as ActorsourcingError
from runtime._errors import ActorStopped as ActorStopped
from runtime._errors import AskTimeout as AskTimeout
from runtime._errors import ConflictRetriesExhausted as ConflictRetriesExhausted
from runtime._errors import InvalidAddress as InvalidAddress
from runtime._errors import InvalidArgument as InvalidArgument
from runtime._errors import Overloaded as Overloaded
from runtime._errors import RuntimeClosed as RuntimeClosed
from runtime._errors import UnknownCategory as UnknownCategory
from runtime._errors import UnknownCommand as UnknownCommand
from runtime._outcome import DeadLetter as DeadLetter
from runtime._outcome import Outcome as Outcome
from runtime._process_manager import CommandSender as CommandSender
from runtime._process_manager import ProcessContext as ProcessContext
from runtime._process_manager import ProcessManager as ProcessManager
from runtime._projection_engine import ProjectionEngine as ProjectionEngine
from runtime._projection_errors import ParkedEventNotFound as ParkedEventNotFound
from runtime._projection_errors import ProjectionConfigError as ProjectionConfigError
from runtime._projection_errors import ProjectionError as ProjectionError
from runtime._projection_errors import ProjectionFailed as ProjectionFailed
from runtime._projection_errors import ProjectionTimeout as ProjectionTimeout
from runtime._projection_errors import ProjectorNotRunning as ProjectorNotRunning
from runtime._projection_errors import RebuildFailed as RebuildFailed
from runtime._projection_errors import UnknownProjector as UnknownProjector
from runtime._projection_rebuild import RebuildProgress as RebuildProgress
from runtime._projection_rebuild import rebuild as rebuild
from runtime._projection_sqlite import SQLiteProjector as SQLiteProjector
from runtime._projection_sqlite_file import open_read_model as open_read_model
from runtime._projection_store import StoreProjector as StoreProjector
from runtime._projection_store import TransactionalStoreProjector as TransactionalStoreProjector
from runtime._projection_types import BusStatistics as BusStatistics
from runtime._projection_types import FailurePolicy as FailurePolicy
from runtime._projection_types import Page as Page
from runtime._projection_types import ParkedEvent as ParkedEvent
from runtime._projection_types import ProjectorState as ProjectorState
from runtime._projection_types import ProjectorStatistics as ProjectorStatistics
from runtime._projector import Projector as Projector
from runtime._runtime import Runtime as Runtime
from runtime._stats import RuntimeStatistics as RuntimeStatistics
from stores._gc import DEFAULT_GC_THRESHOLD as DEFAULT_GC_THRESHOLD

__all__ = [
    "Runtime",
    "Address",
    "Outcome",
    "DeadLetter",
    "RuntimeStatistics",
    "DEFAULT_GC_THRESHOLD",
    # read side
    "EventBus",
    "Subscription",
    "BusStatistics",
    "Page",
    "Projector",
    "SQLiteProjector",
    "StoreProjector",
    "TransactionalStoreProjector",
    "open_read_model",
    "ProjectionEngine",
    "ProjectorState",
    "ProjectorStatistics",
    "FailurePolicy",
    "ParkedEvent",
    "rebuild",
    "RebuildProgress",
    "ProcessManager",
    "ProcessContext",
    "CommandSender",
    # errors
    "ActorsourcingError",
    "ActorError",
    "InvalidAddress",
    "InvalidArgument",
    "UnknownCategory",
    "UnknownCommand",
    "Overloaded",
    "AskTimeout",
    "RuntimeClosed",
    "ActorStopped",
    "ActivationFailed",
    "ConflictRetriesExhausted",
    "ProjectionError",
    "ProjectionConfigError",
    "ProjectionFailed",
    "ProjectionTimeout",
    "ProjectorNotRunning",
    "UnknownProjector",
    "ParkedEventNotFound",
    "RebuildFailed",
]
