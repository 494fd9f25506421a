"""LISTEN/NOTIFY for :class:`stores.PostgresStore`: wake waiters when any process commits.

Every write transaction runs ``pg_notify(channel, new_head)``; PostgreSQL
delivers a notification only when (and if) its transaction commits, so a
notified head is always committed and visible. A :class:`HeadWatcher` holds
one LISTEN connection (opened lazily, on the first wait), reconnects when it
is dropped, and re-reads the head every ``poll_interval`` as a safety net for
notifications missed while it was disconnected.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import asyncpg
import structlog

__all__ = ["HeadWatcher"]

_log = structlog.get_logger("stores.postgres")


class HeadWatcher:
    """Tracks the highest head seen and wakes :meth:`wait` callers when it moves."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        settings: dict[str, str],
        task_group: anyio.abc.TaskGroup,
        read_head: Callable[[], Awaitable[int]],
        poll_interval: float,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._settings = settings
        self._tg = task_group
        self._read_head = read_head
        self._poll = poll_interval
        self._known = 0
        self._moved = asyncio.Event()
        self._listening = asyncio.Event()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self.notifications = 0
        """Notifications received (a count for tests and operators)."""
        self.head_reads = 0
        """Head queries run by :meth:`wait` (a count for tests and operators)."""
        # LISTEN connections opened so far, and which one was up (and when) at
        # the last head read: see _fresh().
        self._connections = 0
        self._read_connection = -1
        self._read_at = -math.inf

    def saw_head(self, head: int) -> None:
        """Record a committed head (from this process's writer or a notification)."""
        if head > self._known:
            self._known = head
            self._wake()

    def _wake(self) -> None:
        # Waiters hold the old event; a fresh one serves the next round.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def stop(self) -> None:
        """Stop the LISTEN task (the store is closing)."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()
        self._wake()

    def _fresh(self) -> bool:
        """True when ``_known`` needs no re-read: the head was read while the current
        LISTEN connection was up, less than ``poll_interval`` ago, so every commit
        since then has been (or is being) delivered as a notification."""
        return (
            self._listening.is_set()
            and self._read_connection == self._connections
            and anyio.current_time() - self._read_at < self._poll
        )

    async def _read(self) -> None:
        connection = self._connections if self._listening.is_set() else -1
        started = anyio.current_time()
        self.head_reads += 1
        self.saw_head(await self._read_head())
        self._read_connection, self._read_at = connection, started

    async def wait(self, after: int, timeout: float) -> int:  # noqa: ASYNC109 (see wait_for_head)
        """Return the head once it is above ``after``, or the last head seen at ``timeout``."""
        deadline = anyio.current_time() + timeout  # one timeout for the whole call
        if self._scope is None and not self._stopped:
            self._scope = anyio.CancelScope()
            self._tg.start_soon(self._listen, self._scope)
            # Listen before reading the head, so no commit falls between them.
            with anyio.move_on_after(min(timeout, 5.0)):
                await self._listening.wait()
        with anyio.move_on_at(deadline):
            while not self._stopped:
                if self._known > after:
                    return self._known
                moved = self._moved
                # A caller polling with short timeouts (the event bus) costs no
                # query per call: while listening, notifications keep _known
                # current, and the head is re-read only every poll_interval.
                if not self._fresh():
                    await self._read()
                    if self._known > after:
                        return self._known
                with anyio.move_on_after(self._poll):
                    await moved.wait()
        # No last read here: the answer is the last head seen (by a read or a
        # notification), so a waiter never blocks past its timeout on a query.
        return self._known

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        try:
            self.saw_head(int(payload))
        except ValueError:
            _log.warning("ignoring a malformed head notification", payload=payload)

    async def _listen(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                conn: asyncpg.Connection | None = None
                try:
                    conn = await asyncpg.connect(self._dsn, server_settings=self._settings)
                    await conn.add_listener(self._channel, self._on_notify)
                    self._connections += 1  # heads read before this one are stale
                    self._listening.set()
                    # Commits made while we were not listening: wake waiters to re-read.
                    self._wake()
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    # is_closed() as well, in case the loss is noticed without
                    # the termination callback.
                    while not conn.is_closed():
                        with anyio.move_on_after(min(self._poll, 1.0)):
                            await lost.wait()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    _log.warning("postgres LISTEN connection failed; reconnecting", error=repr(exc))
                finally:
                    self._listening.clear()
                    if conn is not None:
                        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                            try:
                                await conn.close()
                            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                                conn.terminate()
                # Reconnect soon (waiters fall back to polling meanwhile).
                await anyio.sleep(min(self._poll, 0.5))
