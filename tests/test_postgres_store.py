"""PostgresStore against the real server: conflicts, group commit, consumer
transactions, checkpoints, snapshots, schema versions, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from stores import (
    ANY,
    ConcurrencyError,
    CorruptSnapshot,
    DuplicateCommand,
    NewEvent,
    PostgresStore,
    RecordedEvent,
    SerializationError,
    StoreClosed,
    StoreUnavailable,
)
from tests import pg
from tests.pg import admin, ev

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent


# -- conflicts ---------------------------------------------------------------


async def test_version_conflict_raises_concurrency_error_and_writes_nothing(
    pg_store: PostgresStore,
) -> None:
    """A wrong expected version raises ConcurrencyError(stream, expected, actual); no write."""
    await pg_store.append("Acc-1", [ev(1), ev(2)], 0)
    with pytest.raises(ConcurrencyError) as info:
        await pg_store.append("Acc-1", [ev(3)], 1)
    assert (info.value.stream, info.value.expected, info.value.actual) == ("Acc-1", 1, 2)
    with pytest.raises(ConcurrencyError) as info:
        await pg_store.append("Acc-1", [ev(3)], 0)
    assert (info.value.expected, info.value.actual) == (0, 2)
    assert await pg_store.head() == 2
    assert [e.version for e in await pg_store.read_stream("Acc-1")] == [1, 2]
    assert pg_store.statistics().conflicts == 2


async def test_conflicting_appends_in_one_batch_fail_alone(pg_store: PostgresStore) -> None:
    """Of concurrent appends expecting a new stream, one wins; the others conflict,
    and appends to other streams in the same batch still commit."""
    coros = [pg_store.append("Acc-x", [ev(i)], 0) for i in range(10)]
    coros += [pg_store.append(f"Acc-{i}", [ev(i)], 0) for i in range(10)]
    results = await asyncio.gather(*coros, return_exceptions=True)
    same = results[:10]
    assert sum(not isinstance(r, BaseException) for r in same) == 1
    errors = [r for r in same if isinstance(r, ConcurrencyError)]
    assert len(errors) == 9
    assert all((e.stream, e.expected, e.actual) == ("Acc-x", 0, 1) for e in errors)
    assert all(not isinstance(r, BaseException) for r in results[10:])
    assert await pg_store.head() == 11
    assert pg_store.statistics().conflicts == 9


async def test_appends_to_one_stream_in_one_batch_apply_in_order(pg_store: PostgresStore) -> None:
    """Queued appends with successive expected versions all commit, contiguously."""
    results = await asyncio.gather(*(pg_store.append("Acc-1", [ev(i)], i) for i in range(5)))
    assert [r.version for r in results] == [1, 2, 3, 4, 5]
    assert [list(r.positions) for r in results] == [[1], [2], [3], [4], [5]]


async def test_unique_violation_becomes_concurrency_error(pg_store: PostgresStore) -> None:
    """A row written behind the store's back (unique violation) surfaces as
    ConcurrencyError with the actual version, never as an asyncpg error."""
    s = f'"{pg_store.schema}"'
    await admin(
        f"INSERT INTO {s}.events (position, stream, version, category, type, data, metadata,"
        " schema_version, event_id, recorded_at)"
        " VALUES (1, 'Acc-1', 1, 'Acc', 'T', '{}', '{}', 1, 'e1', now())"
    )
    batch = await asyncio.gather(
        pg_store.append("Acc-1", [ev()], 0), pg_store.append("Acc-2", [ev()], 0),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(batch[0], ConcurrencyError)
    assert (batch[0].stream, batch[0].expected, batch[0].actual) == ("Acc-1", 0, 1)
    assert isinstance(batch[0].__cause__, asyncpg.UniqueViolationError)
    assert not isinstance(batch[1], BaseException)
    assert [e.stream for e in await pg_store.read_all()] == ["Acc-1", "Acc-2"]


async def test_text_postgres_cannot_store_fails_alone(pg_store: PostgresStore) -> None:
    """A NUL or lone surrogate in an event type, event id or command id raises
    SerializationError for that append only; a concurrent good append commits."""
    bad = [
        pg_store.append("Acc-1", [NewEvent("Bad\x00Type", {})], 0),
        pg_store.append("Acc-1", [NewEvent("T", {}, event_id="\ud800")], 0),
        pg_store.append("Acc-1", [ev()], 0, command_id="c\x00"),
    ]
    results = await asyncio.gather(
        *bad, pg_store.append("Acc-2", [ev()], 0), return_exceptions=True
    )
    assert all(isinstance(r, SerializationError) for r in results[:3])
    assert not isinstance(results[3], BaseException)
    assert [e.stream for e in await pg_store.read_all()] == ["Acc-2"]
    with pytest.raises(SerializationError):
        await pg_store.set_checkpoint("p\x00", 1)


async def test_duplicate_command_id_is_rejected_with_its_record(pg_store: PostgresStore) -> None:
    """A recorded command id (earlier or in the same batch) raises DuplicateCommand
    carrying the first outcome, and writes nothing."""
    first = await pg_store.append("Acc-1", [ev()], 0, command_id="c-1", reply={"ok": True})
    with pytest.raises(DuplicateCommand) as info:
        await pg_store.append("Acc-2", [ev()], 0, command_id="c-1")
    assert info.value.record.positions == first.positions
    assert info.value.record.reply == {"ok": True}
    same_batch = await asyncio.gather(
        pg_store.append("Acc-3", [ev()], 0, command_id="c-2"),
        pg_store.append("Acc-4", [ev()], 0, command_id="c-2"),
        return_exceptions=True,
    )
    assert isinstance(same_batch[1], DuplicateCommand)
    assert same_batch[1].record.stream == "Acc-3"
    assert await pg_store.head() == 2
    record = await pg_store.find_command("c-2")
    assert record is not None
    assert record.stream == "Acc-3"


# -- group commit and listeners -----------------------------------------------------


async def test_group_commit_shares_transactions(pg_store: PostgresStore) -> None:
    """Concurrent appends commit in fewer transactions than appends."""
    await asyncio.gather(*(pg_store.append(f"Acc-{i}", [ev(i)], 0) for i in range(200)))
    stats = pg_store.statistics()
    assert stats.appends == 200
    assert stats.events == 200
    assert stats.batches < stats.appends
    assert stats.max_batch > 1
    assert sum(stats.batch_sizes.values()) == stats.batches


async def test_group_commit_respects_batch_limits() -> None:
    """Batches stop at max_batch_appends appends and at max_batch_events events."""
    store = await pg.new_store(max_batch_appends=7, max_batch_events=10)
    try:
        async with store:
            await asyncio.gather(*(store.append(f"Acc-{i}", [ev()], 0) for i in range(30)))
            first = store.statistics()
            assert first.max_batch == 7
            three = [ev(), ev(), ev()]
            await asyncio.gather(*(store.append(f"Ord-{i}", three, 0) for i in range(30)))
            second = store.statistics()
            assert second.appends == 60
            # At most 3 appends of 3 events fit under 10 events: >= 10 more batches.
            assert second.batches - first.batches >= 10
    finally:
        await pg.drop_store(store)


async def test_commit_listener_gets_committed_events_in_position_order(
    pg_store: PostgresStore,
) -> None:
    """Commit listeners receive each batch's events after commit, in position order."""
    got: list[RecordedEvent] = []
    pg_store.add_commit_listener(got.extend)
    await asyncio.gather(*(pg_store.append(f"Acc-{i}", [ev(i), ev(i)], 0) for i in range(20)))
    assert [e.position for e in got] == list(range(1, 41))
    assert got == await pg_store.read_all()


async def test_append_result_carries_its_events_recorded_at(pg_store: PostgresStore) -> None:
    """AppendResult.recorded_at equals the stored events' recorded_at (one per batch);
    an empty append records nothing and reports None."""
    results = await asyncio.gather(
        *(pg_store.append(f"Acc-{i}", [ev(), ev()], 0) for i in range(5))
    )
    stored = {e.position: e.recorded_at for e in await pg_store.read_all()}
    for result in results:
        assert result.recorded_at is not None
        assert {stored[p] for p in result.positions} == {result.recorded_at}
    assert (await pg_store.append("Acc-0", [], 2)).recorded_at is None


# -- consumers, checkpoints, snapshots ----------------------------------------------


async def test_consumer_transaction_commits_read_model_and_checkpoint_together(
    pg_store: PostgresStore,
) -> None:
    """Read-model writes and the checkpoint commit together, or roll back together."""
    table = f'"{pg_store.schema}".balances'
    await admin(f"CREATE TABLE {table} (id text PRIMARY KEY, n int)")
    async with pg_store.open_consumer_transaction("proj") as tx:
        assert tx.checkpoint == 0
        await tx.connection.execute(f"INSERT INTO {table} VALUES ('a', 1)")
        await tx.set_checkpoint(5)

    async def fail_midway() -> None:
        async with pg_store.open_consumer_transaction("proj") as tx:
            assert tx.checkpoint == 5
            await tx.connection.execute(f"UPDATE {table} SET n = 2")
            await tx.set_checkpoint(9)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_midway()
    assert await pg_store.get_checkpoint("proj") == 5
    assert [tuple(r) for r in await admin(f"SELECT id, n FROM {table}")] == [("a", 1)]


async def test_appends_do_not_wait_for_pooled_connections() -> None:
    """Consumer transactions holding every pooled connection can still append (the
    writer has its own connection), so a process manager cannot deadlock the store."""
    async with pg.opened_store(pool_min_size=1, pool_max_size=2) as store:
        with anyio.fail_after(20):  # a deadlock fails here instead of hanging
            async with (
                store.open_consumer_transaction("a") as first,
                store.open_consumer_transaction("b") as second,
            ):
                result = await store.append("Acc-1", [ev()], 0)
                await first.set_checkpoint(result.positions[-1])
                await second.set_checkpoint(result.positions[-1])
        assert await store.get_checkpoint("a") == 1


async def test_checkpoints_never_move_backwards_but_reset_may(pg_store: PostgresStore) -> None:
    """set_checkpoint ignores lower positions; reset_checkpoint sets any position."""
    assert await pg_store.get_checkpoint("p") == 0
    await pg_store.set_checkpoint("p", 10)
    await pg_store.set_checkpoint("p", 3)
    assert await pg_store.get_checkpoint("p") == 10
    await pg_store.reset_checkpoint("p", 2)
    assert await pg_store.get_checkpoint("p") == 2


async def test_corrupt_snapshot_raises_corrupt_snapshot(pg_store: PostgresStore) -> None:
    """A snapshot whose stored bytes are not JSON raises CorruptSnapshot."""
    await pg_store.save_snapshot("Acc-1", 3, {"n": 3})
    loaded = await pg_store.load_snapshot("Acc-1")
    assert loaded is not None
    assert (loaded.version, loaded.state) == (3, {"n": 3})
    await admin(f'UPDATE "{pg_store.schema}".snapshots SET state = $1', b"\xff{")
    with pytest.raises(CorruptSnapshot):
        await pg_store.load_snapshot("Acc-1")
    with pytest.raises(CorruptSnapshot):
        await pg_store.read_replay("Acc-1", 1)


# -- schema and lifecycle --------------------------------------------------------------


async def test_schema_version_is_recorded_and_a_newer_schema_is_refused(
    pg_store: PostgresStore,
) -> None:
    """Opening records the schema version once; a schema from a newer library is refused."""
    s = f'"{pg_store.schema}"'
    again = await pg.new_store(schema=pg_store.schema)
    async with again:
        await again.append("Acc-1", [ev()], ANY)
    rows = await admin(f"SELECT version FROM {s}.actorsourcing_schema")
    assert [r[0] for r in rows] == [1]
    await admin(f"INSERT INTO {s}.actorsourcing_schema VALUES (999)")
    newer = await pg.new_store(schema=pg_store.schema)
    with pytest.raises(StoreUnavailable, match="version 999"):
        await newer.open()


async def test_closed_store_refuses_calls_and_close_is_idempotent() -> None:
    """After aclose, calls raise StoreClosed; a second aclose is a no-op."""
    store = await pg.new_store()
    try:
        async with store:
            await store.append("Acc-1", [ev()], 0)
        await store.aclose()
        with pytest.raises(StoreClosed):
            await store.append("Acc-1", [ev()], 1)
        with pytest.raises(StoreClosed):
            await store.read_all()
    finally:
        await pg.drop_store(store)


def test_importing_stores_does_not_need_asyncpg() -> None:
    """`import stores` works with asyncpg unavailable; only PostgresStore fails."""
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import stores\n"
        "try:\n    stores.PostgresStore\nexcept ImportError:\n    print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ok"


async def test_store_holds_the_gc_threshold_while_open(
    gc_thresholds: tuple[int, int, int],
) -> None:
    """An open PostgresStore holds generation 0 at its gc_threshold, then restores it."""
    store = await pg.new_store(gc_threshold=34_567)
    try:
        assert gc.get_threshold() == gc_thresholds  # not before open
        async with store:
            assert gc.get_threshold() == (34_567, *gc_thresholds[1:])
        assert gc.get_threshold() == gc_thresholds
    finally:
        await pg.drop_store(store)


async def test_writers_read_committed_whatever_the_server_default() -> None:
    """With REPEATABLE READ as the connections' default, two stores appending to one
    schema still see each other's commits after the write lock (the writer's
    transactions are READ COMMITTED): no append fails, positions stay dense."""
    await pg.require_server()
    from stores import ANY, PostgresStore

    schema = pg.new_schema()
    dsn = (
        pg.DSN + ("&" if "?" in pg.DSN else "?") + "default_transaction_isolation=repeatable%20read"
    )
    try:
        async with (
            PostgresStore(dsn, schema=schema, pool_max_size=2) as a,
            PostgresStore(dsn, schema=schema, pool_max_size=2) as b,
        ):

            async def writer(store: PostgresStore, i: int) -> None:
                for j in range(20):
                    await store.append(f"Acc-{i}-{j}", [ev()], ANY)

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(writer, a if i % 2 else b, i)
            positions = [e.position for e in await a.read_all(0, 1000)]
            assert positions == list(range(1, 201))
            async with a.open_consumer_transaction("p") as tx:
                await tx.set_checkpoint(5)
            assert await b.get_checkpoint("p") == 5
    finally:
        await pg.drop_schema(schema)


async def test_appends_fail_rather_than_hang_once_the_writer_stopped() -> None:
    """If the writer task is cancelled (the store's task group failed, say), an append
    queued for it and every later one raise StoreClosed; none waits forever."""
    from stores import StoreClosed
    from stores._postgres_batch import Pending
    from stores._postgres_writer import BatchWriter

    async def never(*args: Any) -> Any:
        raise AssertionError("the writer must not start a batch")

    writer = BatchWriter(never, None, (10, 10), lambda plan: None, never, 0)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    queued: asyncio.Future[Any] = loop.create_future()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await anyio.sleep(0.01)  # the writer waits for work
        tg.cancel_scope.cancel()
        writer.submit(Pending("Acc-1", 0, [], None, None, queued))  # before it sees the cancel
    later: asyncio.Future[Any] = loop.create_future()
    writer.submit(Pending("Acc-2", 0, [], None, None, later))
    for future in (queued, later):
        with anyio.fail_after(5), pytest.raises(StoreClosed):
            await future


async def test_wait_for_head_keeps_to_its_timeout_while_listening_starts(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first wait_for_head starts the LISTEN connection; a slow start counts against
    the caller's timeout instead of adding to it (it took up to twice the timeout)."""
    import stores._postgres_listen as listen

    connect = listen.asyncpg.connect

    async def slow_connect(*args: Any, **kwargs: Any) -> Any:
        await anyio.sleep(3)
        return await connect(*args, **kwargs)

    monkeypatch.setattr(listen.asyncpg, "connect", slow_connect)
    started = anyio.current_time()
    assert await pg_store.wait_for_head(0, 1.0) == 0
    assert anyio.current_time() - started < 1.8


async def test_an_error_between_insert_and_commit_writes_nothing(pg_store: PostgresStore) -> None:
    """Atomic append on PostgreSQL: a batch failing after its INSERT rolls back whole."""

    async def fail() -> None:
        raise RuntimeError("injected")

    assert pg_store._writer is not None
    pg_store._writer.before_commit = fail
    with pytest.raises(StoreUnavailable, match="nothing was written"):
        await pg_store.append("Acc-1", [ev()], 0)
    pg_store._writer.before_commit = None
    assert await pg_store.stream_version("Acc-1") == 0
    assert await pg_store.head() == 0
