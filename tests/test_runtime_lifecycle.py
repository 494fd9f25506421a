"""Activation, snapshots, passivation, supervision and temporal loads (MemoryStore)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from aggregates import Aggregate, Command, Event, Reply, applies, handles
from runtime import ActivationFailed, Address, InvalidArgument, Runtime
from stores import CorruptSnapshot, MemoryStore, NewEvent, SerializationError, Snapshot
from tests.runtime_child import BUGGY, Append, Dump, Seq, SnapSeq, wait_until

pytestmark = pytest.mark.anyio

SEQ = Address("Seq", "1")
SNAP = Address("SnapSeq", "1")


async def items(rt: Runtime, address: Address) -> list[int]:
    """The live actor's items."""
    value: list[int] = (await rt.ask(address, Dump())).value["items"]
    return value


class SlowReads(MemoryStore):
    """A MemoryStore whose stream reads wait for ``gate`` (to hold an activation open)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.gate.set()
        self.reads = 0

    async def read_stream(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        await self.gate.wait()
        return await super().read_stream(*args, **kwargs)


async def test_activation_replays_the_log_and_queues_commands_meanwhile() -> None:
    """A new actor loads its events first; commands sent meanwhile wait and run in order."""
    store = SlowReads()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        await store.append("Seq-1", [NewEvent("Seq.Appended", {"n": n}) for n in (1, 2)], 0)
        store.gate = anyio.Event()
        futures = [rt.ask_nowait(SEQ, Append(n=n)) for n in (3, 4, 5)]
        await wait_until(lambda: store.reads == 1)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert not any(f.done() for f in futures)
        store.gate.set()
        assert [(await f).version for f in futures] == [3, 4, 5]
        assert await items(rt, SEQ) == [1, 2, 3, 4, 5]
        assert rt.statistics().activations == 1


async def test_snapshots_follow_the_policy_and_are_used_on_activation() -> None:
    """Snapshots are saved every snapshot_every events, off the command path, then used."""
    store = MemoryStore()
    async with Runtime(aggregates=[SnapSeq], store=store) as rt:
        for n in range(7):
            await rt.ask(SNAP, Append(n=n))
        await wait_until(lambda: rt.statistics().snapshots == 2)
        snap = await store.load_snapshot("SnapSeq-1")
        assert snap is not None
        assert snap.version == 6
        assert snap.state["items"] == list(range(6))
        # Doctor the snapshot: if activation uses it, the doctored state shows.
        await store.save_snapshot("SnapSeq-1", 6, {"items": [-1], "blobs": 0})
        rt.passivate(SNAP)
        assert await items(rt, SNAP) == [-1, 6]


class CorruptSnapshots(MemoryStore):
    """A MemoryStore whose snapshots cannot be decoded."""

    async def load_snapshot(self, stream: str, max_version: int | None = None) -> Snapshot | None:
        raise CorruptSnapshot(f"{stream}: bad bytes")


@pytest.mark.parametrize("flaw", ["schema", "corrupt", "rejected", "incomplete"])
async def test_unusable_snapshot_is_ignored_with_full_replay(flaw: str) -> None:
    """A snapshot of another schema version, corrupt, rejected or lacking an attribute
    leads to a full replay."""
    store = CorruptSnapshots() if flaw == "corrupt" else MemoryStore()
    async with Runtime(aggregates=[SnapSeq], store=store) as rt:
        for n in range(4):
            await rt.ask(SNAP, Append(n=n))
        await wait_until(lambda: rt.statistics().snapshots == 1)
        if flaw == "schema":
            await store.save_snapshot("SnapSeq-1", 4, {"items": [-1], "blobs": 0}, 99)
        elif flaw == "rejected":
            await store.save_snapshot("SnapSeq-1", 4, ["not", "a", "dict"])
        elif flaw == "incomplete":  # valid JSON, but no "items"
            await store.save_snapshot("SnapSeq-1", 4, {"blobs": 0})
        rt.passivate(SNAP)
        assert await items(rt, SNAP) == [0, 1, 2, 3]
        assert await store.stream_version("SnapSeq-1") == 4


async def test_idle_actors_are_passivated_and_reactivate_with_equal_state() -> None:
    """An idle actor is dropped after idle_timeout; the next command reloads the same state."""
    async with Runtime(aggregates=[Seq], store=MemoryStore(), idle_timeout=0.02) as rt:
        await rt.ask(SEQ, Append(n=1))
        await wait_until(lambda: rt.statistics().live_actors == 0)
        assert rt.statistics().passivations == 1
        out = await rt.ask(SEQ, Append(n=2))
        assert out.version == 2
        assert await items(rt, SEQ) == [1, 2]
        assert rt.statistics().activations == 2


async def test_live_actor_cap_passivates_least_recently_used() -> None:
    """Past max_actors the least recently used idle actor is passivated first."""
    async with Runtime(aggregates=[Seq], store=MemoryStore(), max_actors=2) as rt:
        a, b, c = (Address("Seq", x) for x in "abc")
        await rt.ask(a, Append(n=1))
        await rt.ask(b, Append(n=2))
        await rt.ask(a, Append(n=3))  # b is now the least recently used
        await rt.ask(c, Append(n=4))
        stats = rt.statistics()
        assert (stats.live_actors, stats.passivations) == (2, 1)
        assert not rt.passivate(b)  # already gone
        assert await items(rt, b) == [2]
        assert await items(rt, a) == [1, 3]


async def test_messages_racing_passivation_are_never_lost() -> None:
    """Commands arriving while actors are being passivated all apply, exactly once, in order."""
    rng = random.Random(7)
    async with Runtime(
        aggregates=[Seq], store=MemoryStore(), idle_timeout=0.001, max_actors=3
    ) as rt:
        addresses = [Address("Seq", str(i)) for i in range(6)]
        sent: dict[Address, list[int]] = {a: [] for a in addresses}

        async def sender(address: Address) -> None:
            for n in range(60):
                sent[address].append(n)
                if rng.random() < 0.5:
                    rt.passivate(address)
                await rt.ask(address, Append(n=n))
                if rng.random() < 0.3:
                    await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            for address in addresses:
                tg.start_soon(sender, address)
        assert rt.statistics().passivations > 10
        for address in addresses:
            assert await items(rt, address) == sent[address]


@pytest.fixture
def buggy() -> Iterator[None]:
    """Reset the simulated applier bug after the test."""
    yield
    BUGGY["apply"] = False


@pytest.mark.usefixtures("buggy")
async def test_applier_bug_on_new_event_resets_and_reloads() -> None:
    """An applier failing on a just-recorded event resets the actor (logged); it reloads."""
    async with Runtime(aggregates=[Seq], store=MemoryStore()) as rt:
        await rt.ask(SEQ, Append(n=1))
        BUGGY["apply"] = True
        with capture_logs() as logs:
            out = await rt.ask(SEQ, Append(n=2))  # recorded: the caller hears ok
        assert out.version == 2
        [entry] = [e for e in logs if e["log_level"] == "error"]
        assert (entry["address"], entry["position"], entry["version"]) == ("Seq/1", 2, 2)
        BUGGY["apply"] = False
        assert await items(rt, SEQ) == [1, 2]
        stats = rt.statistics()
        assert (stats.resets, stats.activations) == (1, 2)


@pytest.mark.usefixtures("buggy")
async def test_applier_bug_on_replay_fails_activation_then_recovers() -> None:
    """An applier failing in a replay: ActivationFailed (logged); once fixed, the actor reloads."""
    async with Runtime(aggregates=[Seq], store=MemoryStore()) as rt:
        await rt.ask(SEQ, Append(n=1))
        await rt.ask(SEQ, Append(n=2))
        rt.passivate(SEQ)
        BUGGY["apply"] = True
        with capture_logs() as logs, pytest.raises(ActivationFailed):
            await rt.ask(SEQ, Append(n=3))
        [entry] = [e for e in logs if e["log_level"] == "error"]
        assert (entry["address"], entry["position"]) == ("Seq/1", 1)
        BUGGY["apply"] = False
        assert await items(rt, SEQ) == [1, 2]
        assert await rt.store.head() == 2


@pytest.mark.parametrize("kind", [Seq, SnapSeq])
async def test_load_at_version_and_at_time(kind: type[Seq]) -> None:
    """load rebuilds past state at a version or a time (snapshots or not), leaving the actor be."""
    address = Address(kind.category, "t")
    async with Runtime(aggregates=[kind], store=MemoryStore()) as rt:
        times: list[datetime] = []
        for n in range(8):
            await rt.ask(address, Append(n=n))
            await anyio.sleep(0.002)
            times.append(datetime.now(UTC))
        await wait_until(lambda: rt.statistics().snapshots == (2 if kind is SnapSeq else 0))
        for version in (0, 2, 3, 5, 8, 100):
            past = await rt.load(address, at_version=version)
            assert isinstance(past, kind)
            assert past.items == list(range(min(version, 8)))
        for i in (0, 4, 7):
            past = await rt.load(address, at_time=times[i])
            assert isinstance(past, kind)
            assert past.items == list(range(i + 1))
        early = await rt.load(address, at_time=times[0] - timedelta(days=1))
        assert isinstance(early, kind)
        assert early.items == []
        assert await items(rt, address) == list(range(8))
        with pytest.raises(InvalidArgument):
            await rt.load(address, at_time=datetime.now())  # naive
        with pytest.raises(InvalidArgument):
            await rt.load(address, at_version=1, at_time=times[0])


class Count(Command):
    """Count one more of ``key``."""

    key: int


class Counted(Event, name="Counted"):
    """One more of ``key`` (an int field, fine in JSON)."""

    key: int


class TallyAll(Command):
    """Record a whole tally at once: a dict with int keys, which JSON cannot keep."""

    tally: dict[int, int]


class Tallied(Event, name="Tallied"):
    """A whole tally (int keys: refused when recorded)."""

    tally: dict[int, int]


class Tally(Aggregate):
    """State keyed by ints: its default snapshot (``vars(self)`` as JSON) cannot keep it."""

    category = "Tally"
    snapshot_every = 2

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    @handles
    def count(self, cmd: Count) -> Event:
        return Counted(key=cmd.key)

    @handles
    def tally_all(self, cmd: TallyAll) -> Event:
        return Tallied(tally=cmd.tally)

    @handles
    def dump(self, cmd: Dump) -> Reply:
        return Reply(dict(self.counts))

    @applies
    def counted(self, event: Counted) -> None:
        self.counts[event.key] = self.counts.get(event.key, 0) + 1

    @applies
    def tallied(self, event: Tallied) -> None:
        self.counts.update(event.tally)


async def test_state_json_cannot_keep_is_refused_or_never_snapshotted() -> None:
    """Int dict keys would come back from JSON as str: an event holding them is refused
    (nothing recorded), and a snapshot of state holding them is skipped, so replay
    always rebuilds the live state."""
    address = Address("Tally", "1")
    async with Runtime(aggregates=[Tally], store=MemoryStore()) as rt:
        with capture_logs() as logs:
            for _ in range(3):
                await rt.ask(address, Count(key=7))
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "snapshot skipped: the state cannot be encoded as JSON"
        ]
        with pytest.raises(SerializationError, match="tally"):
            await rt.ask(address, TallyAll(tally={7: 10}))
        assert await rt.store.stream_version("Tally-1") == 3
        assert (await rt.ask(address, Dump())).value == {7: 3}
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert await rt.store.load_snapshot("Tally-1") is None
        rt.passivate(address)
        assert (await rt.ask(address, Dump())).value == {7: 3}
        assert (await rt.load(address)).counts == {7: 3}
