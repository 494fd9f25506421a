"""Background snapshot saving, off the command path."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import structlog

from runtime._stats import Counters
from stores import EventStore

__all__ = ["SnapshotWriter"]

_log = structlog.get_logger("runtime")


class SnapshotWriter:
    """Saves queued snapshots one at a time on its own task.

    At most one pending snapshot per stream is kept (a newer one replaces an
    older one not yet saved), so the queue is bounded by the number of streams.
    A failed save is logged and dropped: a snapshot is only a shortcut.
    """

    def __init__(self, store: EventStore, counters: Counters) -> None:
        self._store = store
        self._counters = counters
        self._pending: dict[str, tuple[int, Any, int]] = {}
        self._wake: asyncio.Future[None] | None = None

    def put(self, stream: str, version: int, state: Any, schema_version: int) -> None:
        """Queue a snapshot of ``stream`` at ``version``."""
        self._pending.pop(stream, None)
        self._pending[stream] = (version, state, schema_version)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Save snapshots as they are queued, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake = loop.create_future()
                await self._wake
                continue
            await self.flush_one()

    async def flush(self) -> None:
        """Save every pending snapshot now (used at shutdown)."""
        while self._pending:
            await self.flush_one()

    async def flush_one(self) -> None:
        """Save the oldest pending snapshot."""
        stream = next(iter(self._pending))
        version, state, schema_version = self._pending.pop(stream)
        try:
            await self._store.save_snapshot(stream, version, state, schema_version)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            _log.warning("saving a snapshot failed", stream=stream, version=version, exc_info=True)
        else:
            self._counters.snapshots += 1
