"""Snapshots, checkpoints and consumer transactions of :class:`stores.PostgresStore`, as a mixin.

Like the reads (``_postgres_reads``), the snapshot and checkpoint queries go
through the store's one boundary, ``_call``, which stays in ``_postgres``
with the lifecycle it depends on (the mixin only declares it for the type
checker); a consumer transaction takes a connection of its own from the pool
(``_postgres_consumer``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from stores._base import ConsumerTransaction
from stores._codec import (
    check_checkpoint,
    check_snapshot_args,
    decode_snapshot,
    encode_value,
    validate_stream,
)
from stores._postgres_consumer import consumer_transaction
from stores._postgres_sql import Statements
from stores._types import Snapshot

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresStateCalls"]


class PostgresStateCalls:
    """Snapshots, checkpoints and consumer transactions.

    Mixed into :class:`stores.PostgresStore` ahead of ``EventStore``, so these
    methods implement the contract's abstract ones.
    """

    _sql: Statements

    if TYPE_CHECKING:
        # Provided by PostgresStore; declared here so the mixin type-checks.
        def _check_open(self) -> asyncpg.Pool: ...

        async def _call(self, method: str, query: str, *args: Any) -> Any: ...

    # -- snapshots ---------------------------------------------------------

    async def save_snapshot(
        self, stream: str, version: int, state: Any, schema_version: int = 1
    ) -> None:
        """Save a snapshot of a stream at a version (same version overwrites).

        Raises:
            SerializationError: the state cannot be encoded.
        """
        self._check_open()
        validate_stream(stream)
        check_snapshot_args(version, schema_version)
        data = encode_value(state, f"snapshot state of {stream!r}")
        await self._call("execute", self._sql.save_snapshot, stream, version, data, schema_version)

    async def load_snapshot(self, stream: str, max_version: int | None = None) -> Snapshot | None:
        """The latest snapshot at or below ``max_version`` (any when None), or None.

        Raises:
            CorruptSnapshot: the stored state cannot be decoded.
        """
        self._check_open()
        validate_stream(stream)
        row = await self._call("fetchrow", self._sql.load_snapshot, stream, max_version)
        if row is None:
            return None
        return decode_snapshot(row[0], row[1], row[2], row[3], row[4])

    # -- consumers ---------------------------------------------------------

    async def get_checkpoint(self, name: str) -> int:
        """A consumer's checkpoint (0 when new)."""
        check_checkpoint(name)
        return int(await self._call("fetchval", self._sql.get_checkpoint, name) or 0)

    async def set_checkpoint(self, name: str, position: int) -> None:
        """Move a checkpoint forward; a position at or below it is ignored."""
        check_checkpoint(name, position)
        await self._call("execute", self._sql.set_checkpoint, name, position)

    async def reset_checkpoint(self, name: str, position: int = 0) -> None:
        """Set a checkpoint to ``position``, backwards too."""
        check_checkpoint(name, position)
        await self._call("execute", self._sql.reset_checkpoint, name, position)

    def open_consumer_transaction(
        self, name: str
    ) -> AbstractAsyncContextManager[ConsumerTransaction]:
        """Open a transaction on one connection for a read model plus its checkpoint.

        The consumer's checkpoint row is locked (``SELECT ... FOR UPDATE``)
        for the transaction, so transactions of one consumer name run one at
        a time across processes. Errors raised by your own statements on
        :attr:`~ConsumerTransaction.connection` are asyncpg's, unchanged.
        """
        check_checkpoint(name)
        return consumer_transaction(self._check_open(), self._sql, name)
