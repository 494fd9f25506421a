"""Helpers shared by the store conformance suite (tests/test_store_contract*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from stores import EventStore, NewEvent, RecordedEvent
from tests.conftest import open_backend


def ev(type: str = "Test.Happened", **data: Any) -> NewEvent:
    """A new event of ``type`` with ``data`` as payload."""
    return NewEvent(type, data)


def brief(events: Sequence[RecordedEvent]) -> list[tuple[int, str, int, str, Any]]:
    """The identifying fields of recorded events, for comparisons."""
    return [(e.position, e.stream, e.version, e.type, e.data) for e in events]


def backend_of(request: pytest.FixtureRequest) -> str:
    """The name of the backend the ``store`` fixture was parametrised with."""
    return str(request.node.callspec.params["store"])


@asynccontextmanager
async def extra_store(name: str, path: Path, **options: object) -> AsyncIterator[EventStore]:
    """A second open store of the named backend (in its own directory), with options."""
    await anyio.Path(path).mkdir()
    backend = await open_backend(name, path, **options)
    try:
        async with backend:
            yield backend
    finally:
        if name == "postgres":
            from tests import pg

            await pg.drop_store(backend)


async def assert_unchanged(store: EventStore, stream: str, version: int, head: int) -> None:
    """Fail unless the stream's version and the log's head are as given."""
    assert await store.stream_version(stream) == version
    assert await store.head() == head
    assert len(await store.read_stream(stream)) == version


async def writer_process_up(store: Any) -> Any:
    """Wait (30 s at most) until a SQLiteStore's writer process is up; return it."""
    with anyio.fail_after(30):
        while True:  # polled: the store signals nothing when its process is up
            process = store._process
            if process is not None and process.usable:
                return process
            await anyio.sleep(0.01)
