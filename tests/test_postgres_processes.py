"""PostgresStore across processes and connections: global order with writer
processes, reconnects, timeouts, a frozen writer, LISTEN/NOTIFY."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from stores import (
    PostgresStore,
    StoreClosed,
    StoreUnavailable,
)
from tests import pg
from tests.pg import ev, terminate_backends

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent


# -- global order ----------------------------------------------------------


@pytest.mark.slow
async def test_global_order_has_no_gaps_with_writer_processes_and_a_slow_writer() -> None:
    """A tailing reader sees every position once, in order, while 3 writer processes
    and a deliberately slow long-open writing transaction commit concurrently."""
    schema = pg.new_schema()
    store = await pg.new_store(schema=schema, poll_interval=0.2)
    writers = [(1, 300, 0), (2, 300, 0), (3, 300, 0), (4, 30, 5)]  # id, events, slow batches
    total = sum(n for _, n, _ in writers)
    try:
        async with store:
            finished = anyio.Event()
            outputs: list[bytes] = []

            async def writer(writer_id: int, count: int, slow: int) -> None:
                cmd = [sys.executable, "-m", "tests.pg_child", schema, str(writer_id)]
                result = await anyio.run_process([*cmd, str(count), str(slow)], cwd=ROOT)
                outputs.append(result.stdout)

            async def writers_then_flag() -> None:
                async with anyio.create_task_group() as tg:
                    for w in writers:
                        tg.start_soon(writer, *w)
                finished.set()

            seen = 0
            versions: dict[str, int] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(writers_then_flag)
                while True:
                    page = await store.read_all(seen, 200)
                    for event in page:
                        # Dense positions: anything but seen + 1 is a skipped event.
                        assert event.position == seen + 1, (seen, event.position)
                        assert event.version == versions.get(event.stream, 0) + 1
                        versions[event.stream] = event.version
                        seen = event.position
                    if not page:
                        if finished.is_set() and seen == await store.head():
                            break
                        await store.wait_for_head(seen, 0.5)
            assert sorted(outputs) == sorted(f"ok {n}\n".encode() for _, n, _ in writers)
            assert seen == total
            assert sum(versions.values()) == total
    finally:
        await pg.drop_schema(schema)


# -- connections ---------------------------------------------------------------


async def test_reconnects_after_backends_are_terminated(pg_store: PostgresStore) -> None:
    """After pg_terminate_backend on every store connection, the next read and append succeed."""
    for version in range(3):
        assert await terminate_backends(pg_store.schema) >= 1
        result = await pg_store.append("Acc-1", [ev()], version)
        assert result.version == version + 1
        assert await terminate_backends(pg_store.schema) >= 1
        assert len(await pg_store.read_stream("Acc-1")) == version + 1
    assert await pg_store.head() == 3


async def test_connection_lost_before_commit_reports_an_unknown_outcome(
    pg_store: PostgresStore,
) -> None:
    """If the connection dies after the batch is written but before COMMIT, the append
    raises StoreUnavailable saying its outcome is unknown (here: not committed)."""
    calls = 0

    async def kill_connections() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await terminate_backends(pg_store.schema)

    pg_store._writer.before_commit = kill_connections  # type: ignore[union-attr]  # test hook
    with pytest.raises(StoreUnavailable, match="outcome is unknown"):
        await pg_store.append("Acc-1", [ev()], 0)
    assert await pg_store.stream_version("Acc-1") == 0
    assert (await pg_store.append("Acc-1", [ev()], 0)).positions == range(1, 2)


async def test_unreachable_server_raises_store_unavailable() -> None:
    """Opening against a closed port raises StoreUnavailable with the OS error chained."""
    await pg.require_server()
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", schema=pg.new_schema())
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreClosed):
        await store.head()


async def test_statement_timeout_bounds_waiting_for_the_write_lock() -> None:
    """While another session holds the schema's write lock, an append fails with
    StoreUnavailable after statement_timeout, writes nothing, and later appends work."""
    store = await pg.new_store(statement_timeout=0.2)
    try:
        async with store:
            conn = await asyncpg.connect(pg.DSN)
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", store._sql.lock_key)
                with pytest.raises(StoreUnavailable) as info:
                    await store.append("Acc-1", [ev()], 0)
                assert isinstance(info.value.__cause__, asyncpg.QueryCanceledError)
            finally:
                await conn.close()
            assert await store.head() == 0
            assert (await store.append("Acc-1", [ev()], 0)).version == 1
    finally:
        await pg.drop_store(store)


async def test_a_frozen_writer_loses_the_write_lock_after_the_idle_timeout() -> None:
    """A writer process frozen mid-transaction is cut off by the server after
    statement_timeout idle, so another store's append gets the write lock."""
    frozen = await pg.new_store(statement_timeout=0.2)
    other = await pg.new_store(schema=frozen.schema, statement_timeout=10)
    try:
        async with frozen, other:
            thaw = anyio.Event()

            async def freeze() -> None:
                with anyio.move_on_after(20):
                    await thaw.wait()

            frozen._writer.before_commit = freeze  # type: ignore[union-attr]  # test hook
            outcome: list[BaseException] = []

            async def frozen_append() -> None:
                try:
                    await frozen.append("Acc-frozen", [ev()], 0)
                except StoreUnavailable as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(frozen_append)
                await anyio.sleep(0.1)  # let it take the lock
                assert (await other.append("Acc-1", [ev()], 0)).positions == range(1, 2)
                thaw.set()
            assert len(outcome) == 1
            assert [e.stream for e in await other.read_all()] == ["Acc-1"]
    finally:
        await pg.drop_store(frozen)


# -- LISTEN/NOTIFY -------------------------------------------------------------


async def test_notify_wakes_a_waiter_in_another_store() -> None:
    """A commit through one store wakes wait_for_head in another store instance on the
    same schema (its poll interval is far beyond the timeout, so only NOTIFY can)."""
    writer = await pg.new_store()
    reader = await pg.new_store(schema=writer.schema, poll_interval=600)
    try:
        async with writer, reader:
            assert await reader.wait_for_head(-1, 10) == 0  # listening now
            heads: list[int] = []

            async def wait() -> None:
                heads.append(await reader.wait_for_head(0, 30))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.2)  # let the waiter read head 0 and block
                await writer.append("Acc-1", [ev(), ev()], 0)
            assert heads == [2]
    finally:
        await pg.drop_store(writer)


async def test_waiter_recovers_after_its_listen_connection_is_terminated() -> None:
    """After the LISTEN connection is killed, the watcher reconnects and a waiter
    still learns of a commit made meanwhile (no poll within its timeout)."""
    writer = await pg.new_store()
    reader = await pg.new_store(schema=writer.schema, poll_interval=600)
    try:
        async with writer, reader:
            assert await reader.wait_for_head(-1, 10) == 0
            heads: list[int] = []

            async def wait() -> None:
                heads.append(await reader.wait_for_head(0, 30))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.2)
                # Both stores share application_name (same schema): kill them all.
                await terminate_backends(writer.schema)
                await writer.append("Acc-1", [ev()], 0)
            assert heads == [1]
    finally:
        await pg.drop_store(writer)


async def test_short_waits_while_listening_run_no_head_queries() -> None:
    """Repeated short wait_for_head calls (the event bus's pattern) query the head once,
    then rely on notifications while listening, and still see another store's commit."""
    writer = await pg.new_store()
    reader = await pg.new_store(schema=writer.schema, poll_interval=600)
    try:
        async with writer, reader:
            watcher = reader._watcher
            assert watcher is not None
            assert await reader.wait_for_head(-1, 10) == 0  # listening now, no read yet
            assert await reader.wait_for_head(0, 0.01) == 0
            assert watcher.head_reads == 1
            for _ in range(20):
                assert await reader.wait_for_head(0, 0.01) == 0
            assert watcher.head_reads == 1
            await writer.append("Acc-1", [ev(), ev()], 0)
            with anyio.fail_after(10):
                while (head := await reader.wait_for_head(0, 0.05)) == 0:
                    pass
            assert head == 2
            assert watcher.head_reads == 1  # the notification told it
    finally:
        await pg.drop_store(writer)
