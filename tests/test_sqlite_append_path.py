"""SQLiteStore's append path: batch statements, schema version 2, event id pool."""

from __future__ import annotations

import contextvars
import dataclasses
import multiprocessing
import sqlite3
import warnings
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from stores import (
    AppendResult,
    ConcurrencyError,
    NewEvent,
    RecordedEvent,
    SQLiteStore,
    StoreClosed,
)
from stores import _codec as codec
from stores import _sqlite_schema as schema
from stores._sqlite_batch import BatchItem
from stores._sqlite_outcomes import outcomes
from stores._sqlite_writer import LARGE_BATCH
from tests._store_helpers import writer_process_up


def ev(**data: Any) -> NewEvent:
    """A test event carrying ``data``."""
    return NewEvent("Test.Happened", data)


def _v1_file(path: Path) -> None:
    """Write a schema-version-1 file holding stream Acc-1 at version 2 (two events)."""
    with sqlite3.connect(path) as conn:
        for statement in schema.MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO streams VALUES (1, 'Acc-1', 'Acc', 2)")
        for version in (1, 2):
            conn.execute(
                "INSERT INTO events VALUES (?, 1, ?, 'Test.Happened', ?, '{}', 1, ?, 0)",
                (version, version, f'{{"v":{version}}}'.encode(), f"id-{version}"),
            )
        conn.execute("PRAGMA user_version=1")


@pytest.mark.anyio
async def test_version_1_file_migrates_and_keeps_stream_versions(tmp_path: Path) -> None:
    """A version-1 file opens at version 2: versions come from the events, checks still hold."""
    path = tmp_path / "events.db"
    _v1_file(path)
    async with SQLiteStore(path) as store:
        assert await store.stream_version("Acc-1") == 2
        with pytest.raises(ConcurrencyError) as info:
            await store.append("Acc-1", [ev(v=3)], 1)
        assert info.value.actual == 2
        result = await store.append("Acc-1", [ev(v=3)], 2)
        assert (result.version, result.positions) == (3, range(3, 4))
        assert [e.data for e in await store.read_stream("Acc-1")] == [{"v": 1}, {"v": 2}, {"v": 3}]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(streams)")]
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(streams)")]
    assert columns == ["id", "name", "category"]
    assert "streams_category" not in indexes


@pytest.mark.anyio
async def test_one_batch_with_rows_crossing_every_insert_chunk_size(tmp_path: Path) -> None:
    """Appends whose rows cross the multi-row INSERT sizes all commit, in order, intact."""
    # 1,100 rows in one append: more than one of each statement size (512 + ... + 1 = 1,023).
    sizes = [1, 15, 16, 17, 127, 128, 129, 145, 300, 1100] + [1] * 150  # 150 more new streams
    async with SQLiteStore(tmp_path / "events.db") as store:
        results: dict[int, Any] = {}

        async def append(i: int, n: int) -> None:
            results[i] = await store.append(f"Big-{i}", [ev(i=i, k=k) for k in range(n)], 0)

        async with anyio.create_task_group() as tg:
            for i, n in enumerate(sizes):
                tg.start_soon(append, i, n)
        assert store.statistics().batches < len(sizes)  # group-committed, not one by one
        everything = await store.read_all(limit=10_000)
        assert [e.position for e in everything] == list(range(1, sum(sizes) + 1))
        for i, n in enumerate(sizes):
            events = await store.read_stream(f"Big-{i}")
            assert [e.version for e in events] == list(range(1, n + 1))
            assert [e.data for e in events] == [{"i": i, "k": k} for k in range(n)]
            assert [e.position for e in events] == list(results[i].positions)
            assert results[i].version == n
            assert await store.stream_version(f"Big-{i}") == n


@pytest.mark.anyio
async def test_appends_to_one_stream_in_one_batch_see_each_other(tmp_path: Path) -> None:
    """A later append to a stream in the same batch is checked against the earlier one."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        outcomes: list[Any] = []

        async def append(expected: int) -> None:
            try:
                outcomes.append((await store.append("Acc-1", [ev(e=expected)], expected)).version)
            except ConcurrencyError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            for expected in (0, 1, 1, 2):  # queued in this order, one batch
                tg.start_soon(append, expected)
        assert outcomes[:2] == [1, 2]
        assert isinstance(outcomes[2], ConcurrencyError)
        assert outcomes[2].actual == 2
        assert outcomes[3] == 3
        assert await store.stream_version("Acc-1") == 3


def _child_id(queue: Any) -> None:
    """Send the first event id a forked child draws."""
    queue.put(codec.new_event_id())


def test_forked_child_never_repeats_the_parents_pooled_ids() -> None:
    """A forked child drops the inherited id pool, so its ids differ from the parent's."""
    codec.new_event_id()  # the pool now holds ids the child would inherit
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() with threads running; none are needed here.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = ctx.Process(target=_child_id, args=(queue,))
        child.start()
    child_id = queue.get(timeout=30)
    child.join(30)
    parent_ids = [codec.new_event_id() for _ in range(codec._ID_BATCH)]
    assert child_id not in parent_ids


@pytest.mark.anyio
async def test_read_and_announced_events_are_plain_frozen_recorded_events(tmp_path: Path) -> None:
    """Events read back and handed to commit listeners equal RecordedEvent(...) and stay frozen."""
    announced: list[RecordedEvent] = []
    async with SQLiteStore(tmp_path / "events.db") as store:
        store.add_commit_listener(announced.extend)
        result = await store.append("Acc-1", [NewEvent("T.A", {"a": 1}, {"m": 2}, 3, "eid-1")], 0)
        (read,) = await store.read_stream("Acc-1")
        (read_all,) = await store.read_all()
    assert result.recorded_at is not None
    expected = RecordedEvent(
        1, "Acc-1", 1, "T.A", {"a": 1}, {"m": 2}, 3, "eid-1", result.recorded_at
    )
    assert announced == [expected]
    assert read == expected
    assert read_all == expected
    assert read.category == "Acc"
    for event in (announced[0], read, read_all):
        assert type(event) is RecordedEvent
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.version = 2  # type: ignore[misc]


@pytest.mark.anyio
async def test_cancelled_close_commits_the_batch_in_flight_and_fails_the_queue(
    tmp_path: Path,
) -> None:
    """Cancelling aclose: the batch on the writer thread commits; appends queued behind it fail."""
    path = tmp_path / "events.db"
    store = SQLiteStore(path, busy_timeout=10.0)
    blocker = sqlite3.connect(path, isolation_level=None)
    outcomes: dict[str, Any] = {}

    async def append(stream: str) -> None:
        try:
            outcomes[stream] = (await store.append(stream, [ev()], 0)).version
        except StoreClosed as exc:
            outcomes[stream] = exc

    async def release_later() -> None:
        await anyio.sleep(0.2)
        blocker.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        # open and aclose nest inside the task group and the cancel scope
        # (the store's own task group is entered by open, exited by aclose).
        with anyio.CancelScope() as scope:
            await store.open()
            blocker.execute("BEGIN IMMEDIATE")  # the writer's next batch waits for this lock
            tg.start_soon(append, "Acc-1")
            while not store._writer or not store._writer._inflight:  # noqa: ASYNC110 - polls a private flag, no event to wait on
                await anyio.sleep(0.005)
            tg.start_soon(append, "Acc-2")  # queued behind the batch on the thread
            await anyio.sleep(0.01)
            tg.start_soon(release_later)
            scope.deadline = anyio.current_time() + 0.05
            await store.aclose()
        assert scope.cancelled_caught
    blocker.close()
    assert outcomes["Acc-1"] == 1
    assert isinstance(outcomes["Acc-2"], StoreClosed)
    async with SQLiteStore(path) as reopened:
        assert [e.stream for e in await reopened.read_all()] == ["Acc-1"]


def test_fast_append_result_equals_the_dataclass_and_stays_frozen() -> None:
    """outcomes()' fast AppendResults equal the dataclass's own and stay frozen."""
    at_us = 1_767_312_000_000_000  # 2026-01-02 00:00 UTC
    at = datetime(2026, 1, 2, tzinfo=UTC)
    one, three = codec.encode_events([ev()], 1 << 20), codec.encode_events([ev()] * 3, 1 << 20)
    items: list[BatchItem] = [
        ("Acc-1", one, 0, None, b"null"),
        ("Acc-2", three, 4, None, b"null"),
        ("Acc-3", one, 1, None, b"null"),
    ]
    results = outcomes(items, (at_us, 5, [1, ConcurrencyError("Acc-2", 4, 5), 2]))
    assert results[0] == AppendResult("Acc-1", 1, range(5, 6), at)
    assert isinstance(results[1], ConcurrencyError)
    assert results[2] == AppendResult("Acc-3", 2, range(6, 7), at)
    fast = results[0]
    assert type(fast) is AppendResult
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.version = 4  # type: ignore[misc]


async def _crowd(store: SQLiteStore, prefix: str, count: int) -> None:
    """``count`` concurrent first appends, all queued before the writer wakes (one crowd)."""
    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(store.append, f"{prefix}-{n}", [ev(n=n)], 0)


@pytest.mark.anyio
async def test_with_a_writer_process_a_crowd_of_32_commits_as_two_cohorts_there(
    tmp_path: Path,
) -> None:
    """With a writer process, 32 appends queued while idle commit as two batches of 16."""
    async with SQLiteStore(tmp_path / "events.db", writer="process") as store:
        process = store._process
        assert process is not None
        assert process.usable
        before, sent = store.statistics(), process.batches
        await _crowd(store, "C", 32)
        after = store.statistics()
        assert (after.batches - before.batches, process.batches - sent) == (2, 2)
        assert after.batch_sizes[16] - before.batch_sizes.get(16, 0) == 2


@pytest.mark.anyio
async def test_on_the_writer_thread_a_crowd_of_48_commits_in_one_batch(tmp_path: Path) -> None:
    """With no writer process a crowd under 64 is not split (two fsyncs on one thread)."""
    async with SQLiteStore(tmp_path / "events.db", writer="thread") as store:
        await _crowd(store, "C", 48)
        stats = store.statistics()
        assert (stats.batches, stats.max_batch) == (1, 48)


@pytest.mark.anyio
async def test_auto_writer_sends_batches_of_16_to_its_process_and_keeps_smaller_ones(
    tmp_path: Path,
) -> None:
    """writer="auto", its process up: a batch of 16 appends goes there, 15 stay on the thread."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        await _crowd(store, "W", 16)  # the first batch of 16: the process starts
        process = await writer_process_up(store)
        sent = process.batches
        await _crowd(store, "S", 15)
        assert process.batches == sent
        await _crowd(store, "L", 16)
        assert process.batches == sent + 1
        assert store.statistics().appends == 47


@pytest.mark.anyio
async def test_an_append_after_the_writer_task_stopped_fails_at_once(tmp_path: Path) -> None:
    """Once the writer task has drained and returned, an append fails: none waits forever."""
    async with SQLiteStore(tmp_path / "events.db", writer="thread") as store:
        await store.append("Acc-1", [ev()], 0)
        writer = store._writer
        assert writer is not None
        writer.close()  # the writer task drains and returns; the store still says open
        with anyio.fail_after(5):
            while not writer._stopped:  # noqa: ASYNC110 - polls a private flag, no event to wait on
                await anyio.sleep(0.005)
            with pytest.raises(StoreClosed):
                await store.append("Acc-1", [ev()], 1)


@pytest.mark.anyio
async def test_a_batch_the_executor_refuses_after_a_commit_leaves_the_writer_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_done starting the next batch on an executor that refuses it (shut down; at
    interpreter exit every executor does) fails that batch and leaves the pipeline idle:
    a later append is refused (or, once the executor takes work again, committed), none
    waits forever, and close does not hang."""
    path = tmp_path / "events.db"
    store = SQLiteStore(path, writer="thread")
    with anyio.fail_after(10):
        await store.open()
        writer = store._writer
        executor = store._executor
        assert writer is not None
        assert executor is not None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the first batch waits on the thread
        first = store.start_append("Acc-1", [ev()], 0)
        while not writer._inflight:  # noqa: ASYNC110 - polls a private flag, no event to wait on
            await anyio.sleep(0.005)
        second = store.start_append("Acc-2", [ev()], 0)  # queued: _done starts it
        submit = executor.submit

        def refuse(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if fn == writer._run_batch:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return submit(fn, *args, **kwargs)

        monkeypatch.setattr(executor, "submit", refuse)
        blocker.execute("COMMIT")
        blocker.close()
        assert (await first).version == 1
        with pytest.raises(StoreClosed):
            await second
        try:
            with anyio.fail_after(2), pytest.raises(StoreClosed):
                await store.start_append("Acc-3", [ev()], 0)
            monkeypatch.setattr(executor, "submit", submit)
            with anyio.fail_after(2):
                assert (await store.append("Acc-4", [ev()], 0)).version == 1
        finally:
            if writer._inflight and not writer._idle.is_set():  # wedged: let close finish
                writer._inflight = False
                writer._idle.set()
            monkeypatch.setattr(executor, "submit", submit)
            await store.aclose()


_CALLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("caller_var")


@pytest.mark.anyio
async def test_the_writer_process_starts_outside_the_appending_callers_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch that starts writer="auto"'s process does not lend it its callers' contextvars.

    The process starter is a task started where the batch begins; had that been
    the kicking caller's context, its logs would carry that caller's structlog
    bindings (say, the address and command id a runtime binds per command).
    """
    seen: list[str | None] = []
    async with SQLiteStore(tmp_path / "events.db") as store:
        monkeypatch.setattr(store, "_start_auto", _record_var(seen))

        async def append(n: int) -> None:
            _CALLER_VAR.set(f"caller-{n}")
            await store.append(f"C-{n}", [ev()], 0)

        async with anyio.create_task_group() as tg:  # one crowd of 16: the process is wanted
            for n in range(LARGE_BATCH):
                tg.start_soon(append, n)
        with anyio.fail_after(10):
            while not seen:  # noqa: ASYNC110 - the recorder has no event to wait on
                await anyio.sleep(0.005)
    assert seen == [None]


def _record_var(seen: list[str | None]) -> Callable[[], Coroutine[Any, Any, None]]:
    async def start_auto() -> None:
        seen.append(_CALLER_VAR.get(None))

    return start_auto
