"""Which asyncpg errors :class:`stores.PostgresStore` retries and translates."""

from __future__ import annotations

import asyncpg

__all__ = ["DRIVER_ERRORS", "RETRYABLE"]

RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,  # pg_terminate_backend(), server shutdown
    asyncpg.CannotConnectNowError,  # the server is starting up
    # Raised *before sending* a query on a pooled connection whose server
    # already sent a FATAL error (pg_terminate_backend while it sat idle)
    # that asyncpg has not yet processed: "cannot switch to state ...;
    # another operation (2) is in progress". Nothing was executed.
    asyncpg.InternalClientError,
)
"""The connection is gone but the server may be fine: the pool replaces the
connection, so one retry on a fresh one is worth it (where it is safe)."""

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    *RETRYABLE,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
)
"""Everything the driver raises: translated to StoreUnavailable (chained) at the boundary."""
