"""The event log: one contract (:class:`EventStore`) and its backends.

``MemoryStore`` (tests, examples), ``SQLiteStore`` (aiosqlite, the embedded
default) and ``PostgresStore`` (asyncpg, imported lazily so a missing driver
breaks only that backend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stores._base import CommitListener as CommitListener
from stores._base import ConsumerTransaction as ConsumerTransaction
from stores._base import EventStore as EventStore
from stores._codec import DEFAULT_MAX_EVENT_BYTES as DEFAULT_MAX_EVENT_BYTES
from stores._codec import MAX_STREAM_NAME as MAX_STREAM_NAME
from stores._errors import ActorsourcingError as ActorsourcingError
from stores._errors import ConcurrencyError as ConcurrencyError
from stores._errors import CorruptSnapshot as CorruptSnapshot
from stores._errors import DuplicateCommand as DuplicateCommand
from stores._errors import InvalidStreamName as InvalidStreamName
from stores._errors import PayloadTooLarge as PayloadTooLarge
from stores._errors import SerializationError as SerializationError
from stores._errors import StoreClosed as StoreClosed
from stores._errors import StoreError as StoreError
from stores._errors import StoreUnavailable as StoreUnavailable
from stores._errors import UnknownSchemaVersion as UnknownSchemaVersion
from stores._gc import DEFAULT_GC_THRESHOLD as DEFAULT_GC_THRESHOLD
from stores._types import ANY as ANY
from stores._types import AppendResult as AppendResult
from stores._types import CommandRecord as CommandRecord
from stores._types import ExpectedVersion as ExpectedVersion
from stores._types import NewEvent as NewEvent
from stores._types import RecordedEvent as RecordedEvent
from stores._types import Snapshot as Snapshot
from stores._types import StoreStatistics as StoreStatistics
from stores._types import category_of as category_of

if TYPE_CHECKING:
    from stores._memory import MemoryStore as MemoryStore
    from stores._postgres import PostgresStore as PostgresStore
    from stores._sqlite import Durability as Durability
    from stores._sqlite import SQLiteStore as SQLiteStore

__all__ = [
    # contract
    "EventStore",
    "ConsumerTransaction",
    "CommitListener",
    "ANY",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "AppendResult",
    "CommandRecord",
    "Snapshot",
    "StoreStatistics",
    "category_of",
    "DEFAULT_GC_THRESHOLD",
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_STREAM_NAME",
    # backends
    "MemoryStore",
    "SQLiteStore",
    "Durability",
    "PostgresStore",
    # errors
    "ActorsourcingError",
    "StoreError",
    "ConcurrencyError",
    "CorruptSnapshot",
    "DuplicateCommand",
    "InvalidStreamName",
    "PayloadTooLarge",
    "SerializationError",
    "StoreClosed",
    "StoreUnavailable",
    "UnknownSchemaVersion",
]

_LAZY = {
    "MemoryStore": "stores._memory",
    "SQLiteStore": "stores._sqlite",
    "Durability": "stores._sqlite",
    "PostgresStore": "stores._postgres",
}


def __getattr__(name: str) -> Any:
    # Backends load on first use: a missing optional driver (asyncpg) breaks
    # only its backend, never `import stores`.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stores' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
