"""The SQLite writer's stream cache: it decides appends only while nobody else has written.

``write_batch`` keeps each write connection's stream ids and versions between
batches (``StreamCache``) and trusts them only while the log's head is the one
it last saw. These tests drive it directly on raw connections to one file,
and through two stores on one file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stores import ConcurrencyError, DuplicateCommand, NewEvent, SQLiteStore, StoreUnavailable
from stores import _sqlite_schema as schema
from stores._codec import encode_events
from stores._sqlite_batch import (
    ANY_VERSION,
    BatchItem,
    BatchOutcome,
    StreamCache,
    write_batch,
)
from stores._sqlite_writer import LARGE_BATCH
from tests._store_helpers import writer_process_up


def _item(
    stream: str, expected: int, type_: str = "Test.Happened", command_id: str | None = None
) -> BatchItem:
    return (stream, encode_events([NewEvent(type_, {})], 1 << 20), expected, command_id, b"null")


def _write(conn: sqlite3.Connection, cache: StreamCache, *items: BatchItem) -> BatchOutcome:
    return write_batch(conn, list(items), 1.0, cache)


@pytest.fixture
def conns(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """Two write connections to one migrated file."""
    path = tmp_path / "events.db"
    first = schema.connect_sync(path, 1.0)
    schema.migrate(first)
    second = schema.connect_sync(path, 1.0)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _stream_rows(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return list(conn.execute("SELECT id, name FROM streams ORDER BY id"))


def test_a_connection_sees_what_another_wrote_since_its_last_batch(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """Versions and stream ids come from the file once another connection has written."""
    a, b = conns
    cache_a, cache_b = StreamCache(), StreamCache()
    assert _write(a, cache_a, _item("Acc-1", 0))[2] == [1]
    assert _write(b, cache_b, _item("Acc-1", 1), _item("Acc-2", 0))[2] == [2, 1]
    # a's cache still says Acc-1 is at 1 and Acc-2 does not exist.
    commit_us, first, results = _write(a, cache_a, _item("Acc-1", 1), _item("Acc-2", 0))
    assert (commit_us, first) == (None, 4)  # both conflict: nothing written
    assert [(type(r), r.actual) for r in results if isinstance(r, ConcurrencyError)] == [
        (ConcurrencyError, 2),
        (ConcurrencyError, 1),
    ]
    assert _write(a, cache_a, _item("Acc-2", 1), _item("Acc-3", 0))[2] == [2, 1]
    assert _stream_rows(a) == [(1, "Acc-1"), (2, "Acc-2"), (3, "Acc-3")]


def test_between_its_own_batches_a_connection_reads_only_the_head(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """A batch of known streams reads no stream state beyond the head."""
    a, _ = conns
    cache = StreamCache()
    _write(a, cache, _item("Acc-1", 0), _item("Acc-2", 0))
    statements: list[str] = []
    a.set_trace_callback(statements.append)
    try:
        assert _write(a, cache, _item("Acc-1", 1), _item("Acc-2", ANY_VERSION))[2] == [2, 2]
    finally:
        a.set_trace_callback(None)
    assert not [s for s in statements if "json_each" in s or "s.name" in s]
    assert cache.head == 4


def test_a_failed_batch_leaves_nothing_of_itself_in_the_cache(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """A stream id and version decided by a batch that rolled back are forgotten."""
    a, _ = conns
    a.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.type = 'Test.Boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    cache = StreamCache()
    _write(a, cache, _item("Acc-1", 0))
    with pytest.raises(StoreUnavailable, match="boom"):
        _write(a, cache, _item("Acc-2", 0, "Test.Boom"), _item("Acc-1", 1, "Test.Boom"))
    # Acc-2 was never created and Acc-1 is still at 1: the same appends, now
    # without the failing type, commit with those versions and the next id.
    assert _write(a, cache, _item("Acc-2", 0), _item("Acc-1", 1))[2] == [1, 2]
    assert _stream_rows(a) == [(1, "Acc-1"), (2, "Acc-2")]


def test_the_cache_starts_afresh_past_its_limit_and_stays_right(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """Before it would pass ``limit`` streams its entries go; versions are then read again."""
    a, _ = conns
    cache = StreamCache(limit=3)
    _write(a, cache, *[_item(f"Acc-{n}", 0) for n in range(3)])
    assert len(cache.ids) == 3
    _write(a, cache, _item("Acc-3", 0))
    assert list(cache.ids) == ["Acc-3"]
    assert cache.head == 4
    assert _write(a, cache, _item("Acc-0", 1), _item("Acc-3", 1))[2] == [2, 2]


def test_the_limit_holds_when_no_batch_commits(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """Batches that write nothing (here: every command a duplicate) stay within the limit."""
    a, _ = conns
    _write(a, StreamCache(), *[_item(f"Acc-{n}", 0, command_id=f"cmd-{n}") for n in range(20)])
    cache = StreamCache(limit=3)
    for n in range(20):  # a replay: the same commands again, each a DuplicateCommand
        commit_us, _, results = _write(a, cache, _item(f"Acc-{n}", 0, command_id=f"cmd-{n}"))
        assert commit_us is None
        assert isinstance(results[0], DuplicateCommand)
        assert len(cache.ids) <= 3


def test_duplicates_and_conflicts_leave_the_cache_true(
    conns: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """A batch that commits nothing keeps what it read; the next batch decides from it."""
    a, _ = conns
    cache = StreamCache()
    deposit = _item("Acc-1", 0, command_id="cmd-1")
    _write(a, cache, deposit)
    commit_us, _, results = _write(a, cache, deposit, _item("Acc-1", 0))
    assert commit_us is None
    assert isinstance(results[0], DuplicateCommand)
    assert isinstance(results[1], ConcurrencyError)
    assert cache.head == 1
    assert _write(a, cache, _item("Acc-1", 1), _item("Acc-2", 0))[2] == [2, 1]
    assert _stream_rows(a) == [(1, "Acc-1"), (2, "Acc-2")]


@pytest.mark.anyio
async def test_two_stores_on_one_file_take_turns_on_one_stream(tmp_path: Path) -> None:
    """Each store's writer sees the other's appends: conflicts are real, never stale."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path, writer="thread") as a, SQLiteStore(path, writer="thread") as b:
        event = NewEvent("Test.Happened", {})
        assert (await a.append("Acc-1", [event], 0)).version == 1
        assert (await b.append("Acc-1", [event], 1)).version == 2
        assert (await a.append("Acc-1", [event], 2)).version == 3
        with pytest.raises(ConcurrencyError) as info:
            await b.append("Acc-1", [event], 2)
        assert info.value.actual == 3
        assert [e.version for e in await b.read_stream("Acc-1")] == [1, 2, 3]


@pytest.mark.anyio
async def test_the_writer_thread_and_the_writer_process_take_turns(tmp_path: Path) -> None:
    """writer="auto": small batches on the thread's connection, large ones in the
    process's; each sees the other's appends, so stale expected versions conflict."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        event = NewEvent("Test.Happened", {})
        versions = dict.fromkeys(range(LARGE_BATCH), 0)

        async def crowd(expected: dict[int, int]) -> list[object]:
            return await asyncio.gather(
                *(store.append(f"Acc-{n}", [event], v) for n, v in expected.items()),
                return_exceptions=True,
            )

        await crowd(versions)  # the first large batch: the process starts
        versions = dict.fromkeys(versions, 1)
        process = await writer_process_up(store)
        for _ in range(3):
            sent = process.batches
            assert [r.version for r in await crowd(versions)] == [  # type: ignore[attr-defined]
                v + 1 for v in versions.values()
            ]
            versions = {n: v + 1 for n, v in versions.items()}
            for n in range(3):  # alone: on the thread, after the process's writes
                assert (await store.append(f"Acc-{n}", [event], versions[n])).version == (
                    versions[n] + 1
                )
                with pytest.raises(ConcurrencyError):
                    await store.append(f"Acc-{n}", [event], versions[n])
                versions[n] += 1
            # In the process again, after the thread's writes: 0-2 are stale.
            stale = {n: v - 1 if n < 3 else v for n, v in versions.items()}
            results = await crowd(stale)
            assert [type(r) for r in results[:3]] == [ConcurrencyError] * 3
            assert [r.version for r in results[3:]] == [  # type: ignore[attr-defined]
                versions[n] + 1 for n in range(3, LARGE_BATCH)
            ]
            versions.update({n: versions[n] + 1 for n in range(3, LARGE_BATCH)})
            assert process.batches == sent + 2
        assert [e.version for e in await store.read_stream("Acc-0")] == list(
            range(1, versions[0] + 1)
        )
