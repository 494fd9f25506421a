"""Consumer transactions of :class:`stores.PostgresStore`: read model + checkpoint, one commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
import asyncpg

from stores._base import ConsumerTransaction
from stores._errors import StoreUnavailable
from stores._postgres_errors import DRIVER_ERRORS
from stores._postgres_sql import Statements

__all__ = ["PgConsumerTransaction", "consumer_transaction"]


class PgConsumerTransaction(ConsumerTransaction):
    """A consumer transaction on one pooled asyncpg connection."""

    def __init__(self, connection: asyncpg.Connection, checkpoint: int) -> None:
        self._connection = connection
        self._checkpoint = checkpoint
        self.dirty = False

    @property
    def connection(self) -> asyncpg.Connection:
        """The ``asyncpg.Connection``, inside the open transaction."""
        return self._connection

    @property
    def checkpoint(self) -> int:
        """The checkpoint as seen inside this transaction (including its own moves)."""
        return self._checkpoint

    async def set_checkpoint(self, position: int) -> None:
        """Move the checkpoint forward (written once, when the block commits)."""
        if position > self._checkpoint:
            self._checkpoint = position
            self.dirty = True


@asynccontextmanager
async def consumer_transaction(
    pool: asyncpg.Pool, sql: Statements, name: str
) -> AsyncIterator[ConsumerTransaction]:
    """Run the block in a transaction holding the consumer's checkpoint row lock.

    ``SELECT ... FOR UPDATE`` on the checkpoint row makes transactions of one
    consumer name run one at a time across processes (PostgreSQL row locks
    are held to transaction end), so two copies of a projector cannot apply
    the same event twice. Commit and rollback run shielded from cancellation.
    """
    try:
        conn = await pool.acquire()
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"PostgreSQL failed: {exc}") from exc
    try:
        # READ COMMITTED whatever the server's default: a second transaction of
        # this consumer waits on the row lock, then reads the checkpoint the
        # first committed (REPEATABLE READ would fail it instead).
        tr = conn.transaction(isolation="read_committed")
        try:
            await tr.start()
            await conn.execute(sql.ensure_checkpoint, name)
            checkpoint = await conn.fetchval(sql.lock_checkpoint, name)
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL failed: {exc}") from exc
        tx = PgConsumerTransaction(conn, int(checkpoint))
        try:
            yield tx
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(*DRIVER_ERRORS):
                await tr.rollback()
            raise
        with anyio.CancelScope(shield=True):
            try:
                if tx.dirty:
                    await conn.execute(sql.set_checkpoint, name, tx.checkpoint)
                await tr.commit()
            except DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"PostgreSQL failed to commit: {exc}") from exc
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await pool.release(conn)
            except DRIVER_ERRORS:
                conn.terminate()
