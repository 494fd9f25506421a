"""Projectors whose checkpoint lives in the event store.

:class:`StoreProjector` is the general kind: its read model is anywhere (a
cache, a search index, another service), its async handler runs for each
event, and its checkpoint is saved in the store after each batch. A crash
between the handler's effect and that save replays those events: **at least
once**, so the handler gets each event's ``position`` to deduplicate with.

:class:`TransactionalStoreProjector` keeps its read model in the event
store's own database and writes it through
``store.open_consumer_transaction``: read model and checkpoint commit
together, **exactly once**. On SQLite its transactions take the file's
write lock, so they compete with the event writer: prefer
:class:`SQLiteProjector` (its own file) for heavy read models there. On
PostgreSQL they lock only the projector's checkpoint row.

Both park failed events (PARK policy) in a small SQLite dead-letter file
named by ``dead_letters``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

from runtime._projection_errors import ProjectionConfigError
from runtime._projection_types import FailurePolicy, ParkedEvent
from runtime._projector import Projector
from runtime._projector_sink import (
    PARKED_SCHEMA,
    EventFailed,
    Sink,
    delete_parked,
    insert_parked,
    select_parked,
)
from stores import EventStore, RecordedEvent

__all__ = ["StoreProjector", "TransactionalStoreProjector"]

AsyncHandler = Callable[[RecordedEvent], Awaitable[None]]
TransactionHandler = Callable[[Any, RecordedEvent], Awaitable[None]]
H = TypeVar("H", AsyncHandler, TransactionHandler)


class _DeadLetters:
    """A dead-letter table in a file of its own (blocking calls, run in a thread)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(PARKED_SCHEMA)

    def park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        assert self.conn is not None
        insert_parked(self.conn, self.name, event, error, attempts)

    def unpark(self, position: int) -> None:
        assert self.conn is not None
        delete_parked(self.conn, self.name, position)

    def list(self) -> list[ParkedEvent]:
        assert self.conn is not None
        return select_parked(self.conn, self.name)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _StoreSink(Sink):
    def __init__(
        self,
        store: EventStore,
        name: str,
        handler: AsyncHandler | None,
        tx_handler: TransactionHandler | None,
        dead_letters: _DeadLetters | None,
        transient: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.store = store
        self.name = name
        self.handler = handler
        self.tx_handler = tx_handler
        self.dead_letters = dead_letters
        # Errors of the machinery, not of the event (a closing runtime, a
        # timeout): retried, then STOP, but never parked.
        self.transient = transient

    async def checkpoint(self) -> int:
        return await self.store.get_checkpoint(self.name)

    async def apply(self, events: Sequence[RecordedEvent], position: int) -> None:
        if self.tx_handler is not None:
            await self._apply_in_transaction(self.tx_handler, events, position)
            return
        assert self.handler is not None
        for index, event in enumerate(events):
            try:
                await self.handler(event)
            except Exception as exc:
                if index:
                    # The effects so far stay: save them before the retries.
                    with anyio.CancelScope(shield=True):
                        await self.store.set_checkpoint(self.name, events[index - 1].position)
                handler = not isinstance(exc, self.transient)
                raise EventFailed(index, exc, handler=handler, applied_prefix=True) from exc
        with anyio.CancelScope(shield=True):
            await self.store.set_checkpoint(self.name, position)

    async def _apply_in_transaction(
        self, handler: TransactionHandler, events: Sequence[RecordedEvent], position: int
    ) -> None:
        failed: EventFailed | None = None
        # Shielded: the store's COMMIT must finish and report (STYLE: cancelled
        # aiosqlite calls still run on their thread).
        with anyio.CancelScope(shield=True):
            try:
                async with self.store.open_consumer_transaction(self.name) as tx:
                    # The checkpoint read under the transaction's lock is the
                    # truth: another copy of this projector (another process)
                    # may have applied some of these events since we read them.
                    done = tx.checkpoint
                    for index, event in enumerate(events):
                        if event.position <= done:
                            continue
                        try:
                            await handler(tx.connection, event)
                        except Exception as exc:
                            failed = EventFailed(index, exc, handler=True, applied_prefix=False)
                            raise
                    await tx.set_checkpoint(position)
            except Exception as exc:
                if failed is not None:
                    raise failed from exc
                raise EventFailed(0, exc, handler=False, applied_prefix=False) from exc

    async def save(self, position: int) -> None:
        with anyio.CancelScope(shield=True):
            await self.store.set_checkpoint(self.name, position)

    async def reset(self, position: int) -> None:
        with anyio.CancelScope(shield=True):
            await self.store.reset_checkpoint(self.name, position)

    async def park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        assert self.dead_letters is not None
        with anyio.CancelScope(shield=True):
            # Parked first, then the checkpoint: a crash in between re-handles
            # the event and parks it again (the row is upserted).
            await anyio.to_thread.run_sync(self.dead_letters.park, event, error, attempts)
            await self.store.set_checkpoint(self.name, event.position)

    async def parked(self) -> list[ParkedEvent]:
        if self.dead_letters is None:
            return []
        return await anyio.to_thread.run_sync(self.dead_letters.list)

    async def retry_parked(self, event: RecordedEvent, attempts: int) -> bool:
        assert self.dead_letters is not None
        try:
            if self.tx_handler is not None:
                async with self.store.open_consumer_transaction(self.name) as tx:
                    await self.tx_handler(tx.connection, event)
            else:
                assert self.handler is not None
                await self.handler(event)
        except Exception as exc:
            await anyio.to_thread.run_sync(self.dead_letters.park, event, exc, attempts)
            return False
        await anyio.to_thread.run_sync(self.dead_letters.unpark, event.position)
        return True

    async def aclose(self) -> None:
        if self.dead_letters is not None:
            await anyio.to_thread.run_sync(self.dead_letters.close)


class _HandlerProjector(Projector, Generic[H]):
    """What the store-checkpointed projectors share: a handler and a dead-letter file."""

    def __init__(
        self,
        name: str,
        handler: H,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        policy: FailurePolicy = FailurePolicy.STOP,
        dead_letters: Path | str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, types=types, categories=categories, policy=policy, **options)
        if not callable(handler):
            raise ProjectionConfigError("handler must be an async callable")
        if policy is FailurePolicy.PARK and dead_letters is None:
            raise ProjectionConfigError(
                "the PARK policy needs a dead_letters file to record parked events in"
            )
        self.handler: H = handler
        self.dead_letters = None if dead_letters is None else Path(dead_letters)

    def _dead_letter_table(self) -> _DeadLetters | None:
        return None if self.dead_letters is None else _DeadLetters(self.dead_letters, self.name)


class StoreProjector(_HandlerProjector[AsyncHandler]):
    """A projector with its checkpoint in the event store: at least once.

    Args:
        name: The projector's name (its checkpoint's name in the store).
        handler: ``await handler(event)`` applies one event; it may see an
            event again after a crash, so make it idempotent (``event.position``
            only grows: keep the last position applied next to the read model).
        types: Only events of these type names (None: all).
        categories: Only events of these stream categories (None: all).
        policy: STOP or PARK once an event failed ``max_attempts`` times.
        dead_letters: A SQLite file for parked events; required with PARK.
        **options: ``max_attempts``, ``retry_backoff``, ``max_backoff``,
            ``batch_size``, ``checkpoint_interval`` (see :class:`Projector`).
    """

    def _make_sink(
        self,
        store: EventStore,
        handler: AsyncHandler,
        transient: tuple[type[BaseException], ...] = (),
    ) -> Sink:
        return _StoreSink(store, self.name, handler, None, self._dead_letter_table(), transient)

    async def _open_sink(self, store: EventStore, runtime: Any) -> Sink:
        sink = self._make_sink(store, self.handler)
        assert isinstance(sink, _StoreSink)
        if sink.dead_letters is not None:
            await anyio.to_thread.run_sync(sink.dead_letters.open)
        return sink


class TransactionalStoreProjector(_HandlerProjector[TransactionHandler]):
    """A read model inside the event store's database: exactly once, via consumer transactions.

    Args:
        name: The projector's name (its checkpoint's name in the store).
        handler: ``await handler(connection, event)`` writes through the
            store's consumer-transaction connection (``aiosqlite.Connection``
            for SQLite, ``asyncpg.Connection`` for PostgreSQL, a ``dict`` for
            the memory store). Do not commit or roll back in it.
        types: Only events of these type names (None: all).
        categories: Only events of these stream categories (None: all).
        policy: STOP or PARK once an event failed ``max_attempts`` times.
        dead_letters: A SQLite file for parked events; required with PARK.
        **options: See :class:`Projector`.
    """

    async def _open_sink(self, store: EventStore, runtime: Any) -> Sink:
        dead = self._dead_letter_table()
        if dead is not None:
            await anyio.to_thread.run_sync(dead.open)
        return _StoreSink(store, self.name, None, self.handler, dead)
