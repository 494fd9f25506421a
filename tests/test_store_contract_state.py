"""The EventStore conformance suite, part two: snapshots, checkpoints, consumer
transactions, commit listeners, closing, concurrent appenders and statistics.

Part one (appends and reads) is ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from stores import (
    ANY,
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    MemoryStore,
    NewEvent,
    RecordedEvent,
    SerializationError,
    StoreClosed,
)
from tests._store_helpers import backend_of, brief, ev, extra_store

pytestmark = pytest.mark.anyio


class _Boom(Exception):
    """Raised inside a consumer transaction to make it roll back."""


# -- snapshots ----------------------------------------------------------------


async def test_load_snapshot_returns_the_latest(store: EventStore) -> None:
    """load_snapshot returns the highest version saved, with its state and schema version."""
    await store.save_snapshot("Account-1", 3, {"balance": 3})
    await store.save_snapshot("Account-1", 10, {"balance": 10}, schema_version=2)
    await store.save_snapshot("Account-1", 5, {"balance": 5})
    snapshot = await store.load_snapshot("Account-1")
    assert snapshot is not None
    assert (snapshot.stream, snapshot.version, snapshot.state) == ("Account-1", 10, {"balance": 10})
    assert snapshot.schema_version == 2
    assert snapshot.recorded_at.utcoffset() is not None


@pytest.mark.parametrize(("max_version", "found"), [(10, 10), (9, 5), (5, 5), (4, 3), (2, None)])
async def test_load_snapshot_bounded_by_max_version(
    store: EventStore, max_version: int, found: int | None
) -> None:
    """load_snapshot(max_version) returns the latest snapshot at or below it, else None."""
    for version in (3, 5, 10):
        await store.save_snapshot("Account-1", version, {"v": version})
    snapshot = await store.load_snapshot("Account-1", max_version)
    assert (snapshot and snapshot.version) == found


async def test_snapshot_same_version_overwrites(store: EventStore) -> None:
    """Saving at an existing version replaces that snapshot."""
    await store.save_snapshot("Account-1", 4, {"old": True})
    await store.save_snapshot("Account-1", 4, {"new": True}, schema_version=2)
    snapshot = await store.load_snapshot("Account-1")
    assert snapshot is not None
    assert (snapshot.state, snapshot.schema_version) == ({"new": True}, 2)


async def test_large_snapshot_round_trips(store: EventStore) -> None:
    """A ~500 KB state is stored and decoded intact."""
    state = {"items": [{"id": i, "name": f"item-{i:06d}", "tags": ["a", "b"]} for i in range(9000)]}
    await store.save_snapshot("Account-1", 1, state)
    snapshot = await store.load_snapshot("Account-1")
    assert snapshot is not None
    assert snapshot.state == state


async def test_missing_snapshot_is_none(store: EventStore) -> None:
    """A stream without snapshots (or only other streams') loads None."""
    await store.save_snapshot("Account-1", 1, {})
    assert await store.load_snapshot("Account-2") is None


async def _ten_events_and_snapshots(store: EventStore, *snapshots: tuple[int, int]) -> str:
    """``Account-1`` with events 1..10 and snapshots at ``(version, schema_version)``."""
    await store.append("Account-1", [ev(n=n) for n in range(1, 11)], 0)
    for version, schema in snapshots:
        await store.save_snapshot("Account-1", version, {"v": version}, schema_version=schema)
    return "Account-1"


async def test_read_replay_without_snapshot_reads_from_the_start(store: EventStore) -> None:
    """No snapshot: None and the payloads read_stream_payloads gives from version 1."""
    stream = await _ten_events_and_snapshots(store)
    snapshot, payloads = await store.read_replay(stream, 1)
    assert snapshot is None
    assert payloads == await store.read_stream_payloads(stream)
    assert [p[0] for p in payloads] == list(range(1, 11))


async def test_read_replay_starts_after_a_usable_snapshot(store: EventStore) -> None:
    """The newest snapshot of the caller's schema version, then the events after it."""
    stream = await _ten_events_and_snapshots(store, (3, 1), (6, 1))
    snapshot, payloads = await store.read_replay(stream, 1)
    assert snapshot is not None
    assert (snapshot.version, snapshot.state, snapshot.schema_version) == (6, {"v": 6}, 1)
    assert payloads == await store.read_stream_payloads(stream, 7)
    assert payloads[0][1:] == ("Test.Happened", 1, {"n": 7})


async def test_read_replay_reads_everything_past_a_snapshot_of_another_schema(
    store: EventStore,
) -> None:
    """The newest snapshot comes back even when its schema differs; the events then start at 1."""
    stream = await _ten_events_and_snapshots(store, (3, 1), (6, 2))
    snapshot, payloads = await store.read_replay(stream, 1)
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (6, 2)
    assert [p[0] for p in payloads] == list(range(1, 11))


@pytest.mark.parametrize(
    ("to_version", "limit", "snap_at", "versions"),
    [
        (5, None, 3, [4, 5]),
        (None, 2, 6, [7, 8]),
        (2, None, None, [1, 2]),
        (6, 3, 6, []),
        (None, 0, 6, []),
    ],
)
async def test_read_replay_bounded_and_limited(
    store: EventStore,
    to_version: int | None,
    limit: int | None,
    snap_at: int | None,
    versions: list[int],
) -> None:
    """to_version bounds the snapshot and the events; limit caps the events after it."""
    stream = await _ten_events_and_snapshots(store, (3, 1), (6, 1))
    snapshot, payloads = await store.read_replay(stream, 1, to_version, limit=limit)
    assert (snapshot and snapshot.version) == snap_at
    assert [p[0] for p in payloads] == versions


async def test_read_replay_of_a_missing_stream(store: EventStore) -> None:
    """A stream with no events: its snapshot if any, and no events."""
    await store.save_snapshot("Account-2", 4, {"v": 4})
    assert await store.read_replay("Account-9", 1) == (None, [])
    snapshot, payloads = await store.read_replay("Account-2", 1)
    assert snapshot is not None
    assert (snapshot.version, payloads) == (4, [])


async def test_unencodable_snapshot_raises_and_saves_nothing(store: EventStore) -> None:
    """A state orjson cannot encode raises SerializationError and keeps the old snapshot."""
    await store.save_snapshot("Account-1", 1, {"ok": 1})
    with pytest.raises(SerializationError):
        await store.save_snapshot("Account-1", 2, {"bad": object()})
    snapshot = await store.load_snapshot("Account-1")
    assert snapshot is not None
    assert snapshot.version == 1


# -- checkpoints and consumer transactions -----------------------------------


async def test_checkpoint_defaults_to_zero(store: EventStore) -> None:
    """A consumer never seen has checkpoint 0."""
    assert await store.get_checkpoint("projector") == 0


async def test_set_checkpoint_never_moves_backwards(store: EventStore) -> None:
    """set_checkpoint moves forward and ignores a position at or below the checkpoint."""
    await store.set_checkpoint("projector", 5)
    await store.set_checkpoint("projector", 3)
    await store.set_checkpoint("projector", 5)
    assert await store.get_checkpoint("projector") == 5
    await store.set_checkpoint("projector", 8)
    assert await store.get_checkpoint("projector") == 8
    assert await store.get_checkpoint("other") == 0


async def test_reset_checkpoint_moves_back(store: EventStore) -> None:
    """reset_checkpoint sets any position, backwards too, and 0 by default."""
    await store.set_checkpoint("projector", 9)
    await store.reset_checkpoint("projector", 4)
    assert await store.get_checkpoint("projector") == 4
    await store.reset_checkpoint("projector")
    assert await store.get_checkpoint("projector") == 0


async def test_consumer_transaction_commits_checkpoint(store: EventStore) -> None:
    """A consumer transaction that exits normally commits its checkpoint move."""
    await store.set_checkpoint("projector", 2)
    async with store.open_consumer_transaction("projector") as tx:
        assert tx.checkpoint == 2
        await tx.set_checkpoint(7)
        await tx.set_checkpoint(6)
        assert tx.checkpoint == 7
    assert await store.get_checkpoint("projector") == 7


async def test_consumer_transaction_rolls_back_on_exception(store: EventStore) -> None:
    """A consumer transaction whose block raises leaves the checkpoint as it was."""
    await store.set_checkpoint("projector", 2)

    async def fail() -> None:
        async with store.open_consumer_transaction("projector") as tx:
            await tx.set_checkpoint(9)
            raise _Boom

    with pytest.raises(_Boom):
        await fail()
    assert await store.get_checkpoint("projector") == 2


# -- commit listeners ----------------------------------------------------------


async def test_commit_listener_receives_committed_events_in_order(store: EventStore) -> None:
    """Each commit hands the listener its events in position order, as read back."""
    seen: list[RecordedEvent] = []
    store.add_commit_listener(seen.extend)
    await store.append("Account-1", [ev(n=1), ev(n=2)], 0)
    await store.append("Order-1", [ev(n=3)], 0)
    await store.append("Account-1", [ev(n=4)], 2)
    assert [e.position for e in seen] == [1, 2, 3, 4]
    assert brief(seen) == brief(await store.read_all())


async def test_commit_listener_never_sees_failed_appends(store: EventStore) -> None:
    """Conflicting, duplicate and unencodable appends reach no listener."""
    batches: list[Sequence[RecordedEvent]] = []
    store.add_commit_listener(batches.append)
    await store.append("Account-1", [ev()], 0, command_id="cmd-1")
    with pytest.raises(ConcurrencyError):
        await store.append("Account-1", [ev()], 0)
    with pytest.raises(DuplicateCommand):
        await store.append("Account-2", [ev()], 0, command_id="cmd-1")
    with pytest.raises(SerializationError):
        await store.append("Account-2", [ev(), NewEvent("Bad", {"x": {1}})], 0)
    assert [[e.position for e in batch] for batch in batches] == [[1]]


async def test_removed_or_failing_listener_does_not_affect_appends(store: EventStore) -> None:
    """A removed listener hears nothing; a raising listener fails neither the append nor others."""
    removed: list[Sequence[RecordedEvent]] = []
    kept: list[Sequence[RecordedEvent]] = []

    def explode(events: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("listener bug")

    remove = store.add_commit_listener(removed.append)
    store.add_commit_listener(explode)
    store.add_commit_listener(kept.append)
    remove()
    remove()  # idempotent
    result = await store.append("Account-1", [ev()], 0)
    assert result.version == 1
    assert removed == []
    assert [[e.position for e in batch] for batch in kept] == [[1]]


# -- closing ---------------------------------------------------------------------


async def test_closed_store_raises_store_closed(
    store: EventStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every call on a closed store raises StoreClosed; aclose is idempotent."""
    async with extra_store(backend_of(request), tmp_path / "closing") as other:
        await other.append("Account-1", [ev()], 0)
        await other.aclose()
        await other.aclose()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: other.append("Account-1", [ev()], ANY),
            lambda: other.read_stream("Account-1"),
            lambda: other.read_all(),
            lambda: other.head(),
            lambda: other.stream_version("Account-1"),
            lambda: other.find_command("cmd"),
            lambda: other.save_snapshot("Account-1", 1, {}),
            lambda: other.load_snapshot("Account-1"),
            lambda: other.get_checkpoint("p"),
            lambda: other.set_checkpoint("p", 1),
            lambda: other.reset_checkpoint("p"),
        ]
        for call in calls:
            with pytest.raises(StoreClosed):
                await call()
        with pytest.raises(StoreClosed):
            async with other.open_consumer_transaction("p"):
                pass


# -- concurrent appenders ---------------------------------------------------------


async def test_concurrent_first_appends_have_one_winner(store: EventStore) -> None:
    """Of many tasks creating one stream with expected 0, one wins and the rest conflict."""
    won: list[int] = []
    lost: list[ConcurrencyError] = []

    async def create(i: int) -> None:
        try:
            await store.append("Account-1", [ev(writer=i)], 0)
        except ConcurrencyError as exc:
            lost.append(exc)
        else:
            won.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(create, i)
    assert len(won) == 1
    assert len(lost) == 19
    assert {(e.stream, e.expected, e.actual) for e in lost} == {("Account-1", 0, 1)}
    assert [e.data for e in await store.read_stream("Account-1")] == [{"writer": won[0]}]


async def test_concurrent_appenders_write_every_version_once(store: EventStore) -> None:
    """Racing appenders that retry on conflict store every version exactly once."""
    writers, per_writer = 8, 5
    conflicts: list[tuple[int, int]] = []  # (expected, actual) of each conflict

    async def write(i: int) -> None:
        for j in range(per_writer):
            while True:
                version = await store.stream_version("Account-1")
                try:
                    await store.append("Account-1", [ev(w=i, j=j)], version)
                except ConcurrencyError as exc:
                    conflicts.append((exc.expected, exc.actual))
                else:
                    break

    async with anyio.create_task_group() as tg:
        for i in range(writers):
            tg.start_soon(write, i)
    events = await store.read_stream("Account-1")
    assert [e.version for e in events] == list(range(1, writers * per_writer + 1))
    written = sorted((e.data["w"], e.data["j"]) for e in events)
    assert written == [(i, j) for i in range(writers) for j in range(per_writer)]
    assert all(actual > expected for expected, actual in conflicts)
    assert store.statistics().conflicts == len(conflicts)


# -- statistics ------------------------------------------------------------------


async def test_statistics_count_appends_events_and_conflicts(store: EventStore) -> None:
    """statistics() counts appends, events, conflicts and batches, as a frozen snapshot."""
    await store.append("Account-1", [ev(), ev()], 0)
    await store.append("Account-1", [ev()], 2)
    with pytest.raises(ConcurrencyError):
        await store.append("Account-1", [ev()], 0)
    stats = store.statistics()
    assert (stats.appends, stats.events, stats.conflicts) == (2, 3, 1)
    assert 1 <= stats.batches <= 2
    assert 1 <= stats.max_batch <= 2
    assert sum(stats.batch_sizes.values()) == stats.batches
    before = (stats.appends, stats.batches, dict(stats.batch_sizes))
    await store.append("Account-2", [ev()], 0)
    assert (stats.appends, stats.batches, dict(stats.batch_sizes)) == before
    assert store.statistics().appends == 3


# -- memory backend specifics -----------------------------------------------------


async def test_memory_consumer_dict_commits_only_on_success() -> None:
    """MemoryStore's consumer connection is a dict kept only when the block succeeds."""
    async with MemoryStore() as store:
        async with store.open_consumer_transaction("balances") as tx:
            tx.connection["acc-1"] = {"balance": 10}
            await tx.set_checkpoint(1)

        async def fail() -> None:
            async with store.open_consumer_transaction("balances") as tx:
                tx.connection["acc-1"]["balance"] = 99
                tx.connection["acc-2"] = {"balance": 1}
                await tx.set_checkpoint(2)
                raise _Boom

        with pytest.raises(_Boom):
            await fail()
        assert store.consumer_data("balances") == {"acc-1": {"balance": 10}}
        assert store.consumer_data("other") == {}
        assert await store.get_checkpoint("balances") == 1


async def test_memory_store_must_be_opened_and_not_reopened() -> None:
    """MemoryStore refuses calls before open and reopening after close."""
    store = MemoryStore()
    with pytest.raises(StoreClosed, match="not open"):
        await store.head()
    async with store:
        assert await store.head() == 0
    with pytest.raises(StoreClosed):
        await store.open()


@pytest.mark.parametrize("limit", [0, -1, 1.5])
def test_memory_store_rejects_bad_max_event_bytes(limit: Any) -> None:
    """MemoryStore(max_event_bytes=...) must be a positive int."""
    with pytest.raises(ValueError, match="max_event_bytes"):
        MemoryStore(max_event_bytes=limit)
