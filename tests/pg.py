"""PostgreSQL test helpers: a fresh schema per store, dropped after the test.

The server is ``ACTORSOURCING_PG_DSN`` (default: the local test server).
Tests skip with a clear message only when no server is reachable (and fail
instead when ``ACTORSOURCING_PG_REQUIRED=1``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from stores import NewEvent

if TYPE_CHECKING:
    from stores import EventStore, PostgresStore

DSN = os.environ.get("ACTORSOURCING_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the PostgreSQL tests use (override with ACTORSOURCING_PG_DSN)."""

REQUIRED = os.environ.get("ACTORSOURCING_PG_REQUIRED") == "1"
"""With ACTORSOURCING_PG_REQUIRED=1 (CI on a machine with PostgreSQL), an
unreachable server fails the PostgreSQL tests instead of skipping them."""


async def require_server() -> None:
    """Skip the calling test if the PostgreSQL server cannot be reached."""
    import asyncpg

    try:
        conn = await asyncpg.connect(DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not reachable at {DSN} (set ACTORSOURCING_PG_DSN): {exc!r}"
        if REQUIRED:
            pytest.fail(f"{message}; ACTORSOURCING_PG_REQUIRED=1 forbids skipping")
        pytest.skip(message)
    await conn.close()


def new_schema() -> str:
    """A fresh, unique schema name."""
    return f"t_{uuid.uuid4().hex}"


async def new_store(schema: str | None = None, **options: Any) -> PostgresStore:
    """A not-yet-opened PostgresStore in a fresh schema (skips if no server)."""
    await require_server()
    from stores import PostgresStore

    options.setdefault("pool_max_size", 4)
    return PostgresStore(DSN, schema=schema or new_schema(), **options)


async def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    import asyncpg

    from stores._postgres_sql import quote_ident

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


async def drop_store(store: EventStore) -> None:
    """Drop the schema of a store made by :func:`new_store`."""
    await drop_schema(store.schema)  # type: ignore[attr-defined]


@asynccontextmanager
async def opened_store(**options: Any) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore in a fresh schema, dropped after the block."""
    store = await new_store(**options)
    try:
        async with store:
            yield store
    finally:
        await drop_store(store)


async def admin(query: str, *args: Any) -> Any:
    """Run one statement on a fresh connection outside any store; return its rows."""
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def terminate_backends(schema: str) -> int:
    """pg_terminate_backend every connection of the stores on ``schema``; return the count."""
    rows = await admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        f"actorsourcing/{schema}"[:63],
    )
    return len(rows)


def ev(i: int = 0) -> NewEvent:
    """A small test event."""
    return NewEvent("Test.Happened", {"i": i})
