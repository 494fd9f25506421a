"""Consumer transactions (read model + checkpoint) for :class:`SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING

import aiosqlite
import anyio

from stores._base import ConsumerTransaction
from stores._codec import check_checkpoint, check_position
from stores._errors import StoreClosed, StoreUnavailable

__all__ = [
    "CHECKPOINT_SQL",
    "SET_CHECKPOINT_SQL",
    "SQLiteConsumers",
    "SQLiteConsumerTransaction",
    "consumer_transaction",
]

_CLOSED = "the store was closed during the consumer transaction (nothing of it was committed)"

CHECKPOINT_SQL = "SELECT position FROM checkpoints WHERE name = ?"
SET_CHECKPOINT_SQL = (
    "INSERT INTO checkpoints (name, position) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)"
)


class SQLiteConsumerTransaction(ConsumerTransaction):
    """A ``BEGIN IMMEDIATE`` transaction on a dedicated connection to the store's file."""

    def __init__(self, connection: aiosqlite.Connection, name: str, checkpoint: int) -> None:
        self._connection = connection
        self._name = name
        self._checkpoint = checkpoint

    @property
    def connection(self) -> aiosqlite.Connection:
        """The ``aiosqlite.Connection``, inside the open transaction."""
        return self._connection

    @property
    def checkpoint(self) -> int:
        """The consumer's checkpoint as read inside this transaction (and moved by it)."""
        return self._checkpoint

    async def set_checkpoint(self, position: int) -> None:
        """Move the checkpoint forward to ``position`` inside this transaction.

        A position at or below the current checkpoint is ignored.
        """
        check_position(position)  # the name was checked when the transaction opened
        if position <= self._checkpoint:
            return
        try:
            await self._connection.execute(SET_CHECKPOINT_SQL, (self._name, position))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite checkpoint write failed: {exc}") from exc
        except ValueError as exc:  # aiosqlite: "no active connection"
            raise StoreClosed(_CLOSED) from exc
        self._checkpoint = position


@asynccontextmanager
async def consumer_transaction(
    conn: aiosqlite.Connection, name: str
) -> AsyncIterator[SQLiteConsumerTransaction]:
    """Run a consumer transaction on ``conn``: commit on success, roll back on error."""
    try:
        # IMMEDIATE takes the write lock now, so the checkpoint read below
        # cannot go stale before COMMIT (https://www.sqlite.org/lang_transaction.html).
        await conn.execute("BEGIN IMMEDIATE")
        rows = list(await conn.execute_fetchall(CHECKPOINT_SQL, (name,)))
    except sqlite3.Error as exc:
        with anyio.CancelScope(shield=True):
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        raise StoreUnavailable(f"SQLite consumer transaction failed to start: {exc}") from exc
    txn = SQLiteConsumerTransaction(conn, name, rows[0][0] if rows else 0)
    try:
        yield txn
    except BaseException:
        # A cancelled aiosqlite call still runs on its thread: shield the
        # rollback so the connection is never handed back mid-transaction.
        # (A connection the closing store took away rolled back as it closed.)
        with anyio.CancelScope(shield=True), suppress(ValueError):
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        raise
    try:
        with anyio.CancelScope(shield=True):
            await conn.execute("COMMIT")
    except ValueError as exc:  # aiosqlite: "no active connection"
        raise StoreClosed(_CLOSED) from exc
    except sqlite3.Error as exc:
        with anyio.CancelScope(shield=True):
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        raise StoreUnavailable(f"SQLite consumer transaction failed to commit: {exc}") from exc


class SQLiteConsumers:
    """Consumer transactions of :class:`SQLiteStore`, mixed into it (a module of its own).

    Each runs on a connection of its own, kept for the next consumer when the
    transaction ended cleanly. The store owns the connections (closes them);
    this class only declares what it uses.
    """

    _state: str
    _idle_consumers: list[aiosqlite.Connection]
    _consumers: set[aiosqlite.Connection]

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

        async def _connect(self) -> aiosqlite.Connection: ...

    def open_consumer_transaction(
        self, name: str
    ) -> AbstractAsyncContextManager[ConsumerTransaction]:
        """A ``BEGIN IMMEDIATE`` transaction on a dedicated connection to this file.

        Its ``.connection`` is an ``aiosqlite.Connection``; the block commits
        the read-model changes and the checkpoint together, or rolls both back.
        The block holds the file's write lock (SQLite has one writer at a
        time), so keep it short and never await an append to this store
        inside it: the writer would wait for the lock until ``busy_timeout``.
        """
        check_checkpoint(name)
        return self._consumer(name)

    @asynccontextmanager
    async def _consumer(self, name: str) -> AsyncIterator[ConsumerTransaction]:
        self._check_open()
        conn = self._idle_consumers.pop() if self._idle_consumers else await self._connect()
        self._consumers.add(conn)
        reusable = False
        try:
            async with consumer_transaction(conn, name) as txn:
                yield txn
            reusable = True
        finally:
            self._consumers.discard(conn)
            # After any error the connection may still have a BEGIN or
            # ROLLBACK queued on its thread (a cancelled aiosqlite call still
            # runs): close it rather than hand it to the next consumer.
            if reusable and self._state == "open" and not conn.in_transaction:
                self._idle_consumers.append(conn)
            else:
                with anyio.CancelScope(shield=True):
                    await conn.close()
