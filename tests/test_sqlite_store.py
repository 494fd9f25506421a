"""SQLiteStore specifics: group commit, pragmas, schema migrations, cancellation, load."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from stores import (
    ANY,
    DEFAULT_GC_THRESHOLD,
    ConcurrencyError,
    CorruptSnapshot,
    DuplicateCommand,
    NewEvent,
    RecordedEvent,
    SerializationError,
    SQLiteStore,
    StoreClosed,
    StoreUnavailable,
)
from stores import _sqlite_schema as schema
from stores._sqlite_schema import Durability


def ev(**data: Any) -> NewEvent:
    """A test event carrying ``data``."""
    return NewEvent("Test.Happened", data)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLiteStore on a fresh file."""
    async with SQLiteStore(tmp_path / "events.db") as s:
        yield s


def pragma(path: Path, name: str) -> Any:
    """Read a pragma through a fresh raw connection."""
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


# -- group commit -------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_appends_share_transactions(store: SQLiteStore) -> None:
    """Many concurrent appends commit in fewer transactions than appends."""
    async with anyio.create_task_group() as tg:
        for i in range(300):
            tg.start_soon(store.append, f"Acc-{i}", [ev(i=i)], 0)
    stats = store.statistics()
    assert stats.appends == 300
    assert stats.events == 300
    assert stats.batches < 300
    assert stats.max_batch > 1
    assert sum(stats.batch_sizes.values()) == stats.batches
    assert await store.head() == 300


@pytest.mark.anyio
async def test_conflicting_append_in_a_batch_fails_alone(store: SQLiteStore) -> None:
    """In one batch, the conflicting append raises ConcurrencyError and the rest commit."""
    await store.append("Acc-x", [ev(n=0)], 0)
    outcomes: dict[int, Any] = {}

    async def one(i: int, stream: str, expected: int) -> None:
        try:
            outcomes[i] = await store.append(stream, [ev(i=i)], expected)
        except ConcurrencyError as exc:
            outcomes[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(20):
            # append 7 expects version 0 of a stream at version 1: conflicts
            tg.start_soon(one, i, "Acc-x" if i == 7 else f"Acc-{i}", 0)
    stats = store.statistics()
    assert stats.batches == 2  # the setup append, then all 20 in one transaction
    assert stats.conflicts == 1
    error = outcomes.pop(7)
    assert isinstance(error, ConcurrencyError)
    assert (error.stream, error.expected, error.actual) == ("Acc-x", 0, 1)
    assert all(r.version == 1 for r in outcomes.values())
    assert await store.head() == 20
    assert await store.stream_version("Acc-x") == 1


@pytest.mark.anyio
async def test_appends_to_one_stream_in_one_batch_see_each_other(store: SQLiteStore) -> None:
    """The second append to a stream in a batch is checked against the first's new version."""
    results: dict[int, Any] = {}

    async def one(i: int, expected: int) -> None:
        try:
            results[i] = await store.append("Acc-1", [ev(i=i), ev(i=i)], expected)
        except ConcurrencyError as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0, 0)
        tg.start_soon(one, 1, 2)
        tg.start_soon(one, 2, 2)  # stale: the stream is at 4 by then
    assert store.statistics().batches == 1
    assert (results[0].version, results[0].positions) == (2, range(1, 3))
    assert (results[1].version, results[1].positions) == (4, range(3, 5))
    assert isinstance(results[2], ConcurrencyError)
    assert results[2].actual == 4
    assert [e.version for e in await store.read_stream("Acc-1")] == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_duplicate_command_in_a_batch_fails_alone(store: SQLiteStore) -> None:
    """A repeated command id in the same batch raises DuplicateCommand; the first commits."""
    results: list[Any] = []

    async def one(stream: str) -> None:
        try:
            results.append(await store.append(stream, [ev()], ANY, command_id="c-1", reply=[1]))
        except DuplicateCommand as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "Acc-1")
        tg.start_soon(one, "Acc-2")
    assert store.statistics().batches == 1
    first, second = results
    assert first.positions == range(1, 2)
    assert isinstance(second, DuplicateCommand)
    assert second.record.stream == "Acc-1"
    assert second.record.reply == [1]
    assert await store.stream_version("Acc-2") == 0
    record = await store.find_command("c-1")
    assert record is not None
    assert (record.stream, record.version, record.positions) == ("Acc-1", 1, range(1, 2))


@pytest.mark.anyio
async def test_unencodable_event_fails_alone_before_the_writer(store: SQLiteStore) -> None:
    """An event orjson cannot encode fails in its caller; concurrent appends commit."""
    errors: list[Exception] = []

    async def bad() -> None:
        try:
            await store.append("Acc-bad", [ev(ok=1), ev(bad=object())], 0)
        except SerializationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.append, "Acc-1", [ev()], 0)
        tg.start_soon(bad)
        tg.start_soon(store.append, "Acc-2", [ev()], 0)
    assert len(errors) == 1
    assert await store.stream_version("Acc-bad") == 0
    assert await store.head() == 2


@pytest.mark.anyio
async def test_unbindable_text_fails_its_caller_not_the_batch(store: SQLiteStore) -> None:
    """A lone surrogate in an event type or command id fails that append alone."""
    errors: list[Exception] = []

    async def bad(events: list[NewEvent], command_id: str | None) -> None:
        try:
            await store.append("Acc-bad", events, 0, command_id=command_id)
        except SerializationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.append, "Acc-1", [ev()], 0)
        tg.start_soon(bad, [NewEvent("T\ud800", {})], None)
        tg.start_soon(bad, [ev()], "c-\udfff")
        tg.start_soon(store.append, "Acc-2", [ev()], 0)
    assert len(errors) == 2
    assert await store.stream_version("Acc-bad") == 0
    assert await store.head() == 2


@pytest.mark.anyio
async def test_commit_listener_gets_each_batch_in_position_order(store: SQLiteStore) -> None:
    """Listeners get every committed event once, in position order, equal to what reads return."""
    seen: list[RecordedEvent] = []
    store.add_commit_listener(seen.extend)
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(store.append, f"Acc-{i % 7}", [ev(i=i), ev(i=i)], ANY)
    assert [e.position for e in seen] == list(range(1, 101))
    assert seen == await store.read_all(0, 1000)


# -- pragmas, schema, files -------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("durability", "level"), [(Durability.FULL, 2), (Durability.NORMAL, 1)])
async def test_durability_sets_synchronous_and_wal(
    tmp_path: Path, durability: Durability, level: int
) -> None:
    """FULL reads back synchronous=2, NORMAL 1, on the writer and consumer connections; WAL on."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path, durability=durability) as store:
        conn = store._writer_conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        async with store.open_consumer_transaction("p") as txn:
            rows = list(await txn.connection.execute_fetchall("PRAGMA synchronous"))
            assert rows[0][0] == level
    assert pragma(path, "journal_mode") == "wal"


def test_default_durability_is_full() -> None:
    """A store built without options uses Durability.FULL (survives power loss)."""
    assert SQLiteStore("unused.db")._durability is Durability.FULL


@pytest.mark.anyio
async def test_empty_file_gets_the_schema_and_keeps_data_on_reopen(tmp_path: Path) -> None:
    """An empty file is migrated to the current schema version; reopening keeps the events."""
    path = tmp_path / "events.db"
    path.touch()
    async with SQLiteStore(path) as store:
        await store.append("Acc-1", [ev(a=1)], 0)
    assert pragma(path, "user_version") == schema.SCHEMA_VERSION
    async with SQLiteStore(path) as store:
        assert [e.data for e in await store.read_stream("Acc-1")] == [{"a": 1}]
        assert (await store.append("Acc-1", [ev(a=2)], 1)).positions == range(2, 3)


@pytest.mark.anyio
async def test_forward_migration_runs_new_steps_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file at an older schema version gets only the missing steps, and keeps its data."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path) as store:
        await store.append("Acc-1", [ev()], 0)
    steps = [*schema.MIGRATIONS, "CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (7)"]
    monkeypatch.setattr(schema, "MIGRATIONS", steps)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(steps))
    async with SQLiteStore(path) as store:
        assert await store.head() == 1
    assert pragma(path, "user_version") == len(steps)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x FROM extra").fetchall() == [(7,)]


@pytest.mark.anyio
async def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    """Opening a file written by a newer schema raises StoreUnavailable and changes nothing."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()
    assert pragma(path, "user_version") == schema.SCHEMA_VERSION + 1
    with pytest.raises(StoreClosed):
        await store.head()


@pytest.mark.anyio
async def test_corrupt_snapshot_raises_corrupt_snapshot(tmp_path: Path) -> None:
    """A snapshot whose stored state is not JSON raises CorruptSnapshot."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path) as store:
        await store.save_snapshot("Acc-1", 3, {"ok": True})
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE snapshots SET state = x'7b7b00'")
        with pytest.raises(CorruptSnapshot):
            await store.load_snapshot("Acc-1")
        with pytest.raises(CorruptSnapshot):
            await store.read_replay("Acc-1", 1)


# -- the GC threshold ------------------------------------------------------------


@pytest.mark.anyio
async def test_store_holds_the_gc_threshold_while_open(
    tmp_path: Path, gc_thresholds: tuple[int, int, int]
) -> None:
    """An open store holds generation 0 at DEFAULT_GC_THRESHOLD (or its own), then restores it."""
    async with SQLiteStore(tmp_path / "a.db") as store:
        assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, *gc_thresholds[1:])
        await store.append("A-1", [ev()], 0)
    assert gc.get_threshold() == gc_thresholds
    async with SQLiteStore(tmp_path / "b.db", gc_threshold=23_456):
        assert gc.get_threshold() == (23_456, *gc_thresholds[1:])
    assert gc.get_threshold() == gc_thresholds
    async with SQLiteStore(tmp_path / "c.db", gc_threshold=None):
        assert gc.get_threshold() == gc_thresholds


@pytest.mark.anyio
async def test_store_and_runtime_share_the_gc_hold(
    tmp_path: Path, gc_thresholds: tuple[int, int, int]
) -> None:
    """A runtime over a store: the larger value holds until both have closed."""
    from aggregates.examples.bank import Account
    from runtime import Runtime

    store = SQLiteStore(tmp_path / "a.db", gc_threshold=80_000)
    async with Runtime(aggregates=[Account], store=store):
        assert gc.get_threshold()[0] == 80_000
    assert gc.get_threshold() == gc_thresholds


@pytest.mark.anyio
async def test_store_that_fails_to_open_releases_the_gc_hold(
    tmp_path: Path, gc_thresholds: tuple[int, int, int]
) -> None:
    """A store whose open fails leaves the thresholds as they were."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable):
        async with SQLiteStore(tmp_path / "dir.db"):
            pass
    assert gc.get_threshold() == gc_thresholds


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10000"])
def test_invalid_gc_threshold_is_refused(tmp_path: Path, value: object) -> None:
    """A bad gc_threshold raises ValueError at construction and leaves the GC alone."""
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="gc_threshold"):
        SQLiteStore(tmp_path / "x.db", gc_threshold=value)  # type: ignore[arg-type]
    assert gc.get_threshold() == before


@pytest.mark.anyio
async def test_a_statement_failing_inside_the_batch_commits_none_of_it(tmp_path: Path) -> None:
    """Atomic append: a batch whose later statement fails (a trigger refuses one command id
    after the events went in) rolls back whole; every append in it fails, nothing is stored."""
    from stores import NewEvent, SQLiteStore, StoreUnavailable

    async with SQLiteStore(tmp_path / "e.db", writer="thread") as store:
        side = sqlite3.connect(tmp_path / "e.db")
        side.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON commands WHEN NEW.command_id = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        side.commit()
        side.close()
        # Queued together: one batch, whose events INSERT succeeds and commands INSERT fails.
        first = store.start_append("S-1", [NewEvent("T.A", {}), NewEvent("T.A", {})], 0)
        second = store.start_append("S-2", [NewEvent("T.A", {})], 0, command_id="boom")
        for future in (first, second):
            with pytest.raises(StoreUnavailable):
                await future
        assert await store.head() == 0
        assert await store.read_all(0, 100) == []
        assert await store.stream_version("S-1") == 0
