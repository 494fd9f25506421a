"""Shared fixtures: anyio's built-in pytest plugin on the asyncio backend, and
the ``store`` fixture that runs the store conformance suite on every backend."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stores import EventStore

# "sqlite-process": SQLiteStore(writer="process"), the writer in a child process.
BACKENDS = ["memory", "sqlite", "sqlite-process", "postgres"]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Run every async test on asyncio (aiosqlite and asyncpg are asyncio-only).

    ``ACTORSOURCING_TEST_LOOP=uvloop`` runs them on uvloop's event loop instead.
    """
    return "asyncio", {"use_uvloop": os.environ.get("ACTORSOURCING_TEST_LOOP") == "uvloop"}


async def open_backend(name: str, tmp_path: Path, **options: object) -> EventStore:
    """Build (not yet open) a store of the named backend for one test."""
    if name == "memory":
        from stores import MemoryStore

        return MemoryStore(**options)  # type: ignore[arg-type]
    if name in ("sqlite", "sqlite-process"):
        from stores import SQLiteStore

        if name == "sqlite-process":
            options = {"writer": "process", **options}
        return SQLiteStore(tmp_path / "events.db", **options)  # type: ignore[arg-type]
    if name == "postgres":
        from tests import pg

        return await pg.new_store(**options)
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open, empty store of each backend; closed (and dropped) after the test."""
    backend = await open_backend(request.param, tmp_path)
    async with backend:
        yield backend
    if request.param == "postgres":
        from tests import pg

        await pg.drop_store(backend)


@pytest.fixture
async def pg_store() -> AsyncIterator[EventStore]:
    """An open PostgresStore in a fresh schema, dropped afterwards."""
    from tests import pg

    async with pg.opened_store() as opened:
        yield opened


@pytest.fixture
def gc_thresholds() -> Iterator[tuple[int, int, int]]:
    """Python's default thresholds for the test, whatever the process had; put back after."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)
