"""The command path's shortcuts keep their promises: lazy outcomes, slotted timeouts, GC opt-in."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import anyio
import pytest

import runtime._sending as sending_module
from aggregates.examples.bank import Account, Deposit, GetBalance, Open
from runtime import DEFAULT_GC_THRESHOLD, Address, AskTimeout, InvalidArgument, Outcome, Runtime
from stores import MemoryStore, SQLiteStore
from tests.runtime_child import Append, Dump, Seq
from tests.test_runtime_flow import GatedStore

pytestmark = pytest.mark.anyio

ACC = Address("Account", "1")
SEQ = Address("Seq", "1")


async def test_outcome_events_match_the_log_and_the_commit_time(tmp_path: Path) -> None:
    """A lazily built Outcome.events equals what a read of the log returns, commit time included."""
    async with Runtime(aggregates=[Account], path=tmp_path / "e.db") as rt:
        await rt.ask(ACC, Open(owner="ann"))
        out = await rt.ask(ACC, Deposit(amount=5), command_id="c-1", correlation_id="k")
        stored = await rt.store.read_stream(ACC.stream)
    assert out.events == (stored[1],)
    assert out.events is out.events  # built once
    assert out.events[0].metadata == {"command_id": "c-1", "correlation_id": "k"}


async def test_outcome_is_immutable_comparable_and_picklable() -> None:
    """Outcome refuses attribute writes, compares by value and survives pickling."""
    async with Runtime(aggregates=[Account], store=MemoryStore()) as rt:
        opened = await rt.ask(ACC, Open(owner="ann"))
        query = await rt.ask(ACC, GetBalance())
    with pytest.raises(AttributeError):
        opened.version = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        opened.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del opened.value
    copy = pickle.loads(pickle.dumps(opened))
    assert copy == opened
    assert copy is not opened
    assert opened != query
    assert query == Outcome(ACC, (), 1, range(0), 0)
    assert repr(query) == (
        "Outcome(address=Address('Account', '1'), events=(), version=1, "
        "positions=range(0, 0), value=0, duplicate=False)"
    )
    match opened:
        case Outcome(address=address, version=1):
            assert address == ACC
        case _:  # pragma: no cover - the match must take the first case
            pytest.fail("Outcome did not match by attributes")


async def test_slotted_timeout_fires_not_early_and_the_command_still_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slotted timeout raises AskTimeout no earlier than asked; the command still runs."""
    monkeypatch.setattr(sending_module, "_SLOTTED_TIMEOUT", 0.01)
    store = GatedStore()
    async with Runtime(aggregates=[Seq], store=store) as rt:
        started = anyio.current_time()
        with pytest.raises(AskTimeout, match="may still complete"):
            await rt.ask(SEQ, Append(n=1), timeout=0.03)
        assert anyio.current_time() - started >= 0.03
        store.gate.set()
        assert (await rt.ask(SEQ, Dump(), timeout=5.0)).value["items"] == [1]
        assert len(rt._deadlines) == 0  # answered asks leave no entry behind


async def test_answered_asks_leave_no_deadline_entries() -> None:
    """Asks answered before their (slotted) timeout drop their deadline entry at once."""
    async with Runtime(aggregates=[Seq], store=MemoryStore()) as rt:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(rt.ask, Address("Seq", str(i % 5)), Append(n=i))
        assert len(rt._deadlines) == 0


@pytest.mark.parametrize("seconds", [1.0, 30, 1e9, 1e308])
async def test_long_timeouts_of_any_size_answer_normally(seconds: float) -> None:
    """Asks with long timeouts (slotted or, past the slots' range, their own timer) get answers."""
    async with Runtime(aggregates=[Account], store=MemoryStore()) as rt:
        assert (await rt.ask(ACC, Open(owner="ann"), timeout=seconds)).version == 1
        assert len(rt._deadlines) == 0


async def test_gc_threshold_is_raised_by_default_and_restored_on_exit(
    gc_thresholds: tuple[int, int, int],
) -> None:
    """By default generation 0's threshold is DEFAULT_GC_THRESHOLD while open, then restored."""
    async with Runtime(aggregates=[Account], store=MemoryStore()) as rt:
        assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, *gc_thresholds[1:])
        await rt.ask(ACC, Open(owner="ann"))
    assert gc.get_threshold() == gc_thresholds
    async with Runtime(aggregates=[Account], store=MemoryStore(), gc_threshold=12_345):
        assert gc.get_threshold() == (12_345, *gc_thresholds[1:])
    assert gc.get_threshold() == gc_thresholds


async def test_gc_threshold_none_leaves_the_gc_alone(gc_thresholds: tuple[int, int, int]) -> None:
    """gc_threshold=None never touches the thresholds."""
    async with Runtime(aggregates=[Account], store=MemoryStore(), gc_threshold=None):
        assert gc.get_threshold() == gc_thresholds
    assert gc.get_threshold() == gc_thresholds


async def test_gc_threshold_keeps_a_higher_or_disabling_setting(
    gc_thresholds: tuple[int, int, int],
) -> None:
    """An application's higher threshold, or 0 (automatic collection off), is kept as it is."""
    for app_setting in ((90_000, 20, 30), (0, 10, 10)):
        gc.set_threshold(*app_setting)
        async with Runtime(aggregates=[Account], store=MemoryStore()):
            assert gc.get_threshold() == app_setting
        assert gc.get_threshold() == app_setting


async def test_gc_threshold_held_until_the_last_runtime_closes(
    gc_thresholds: tuple[int, int, int],
) -> None:
    """Overlapping runtimes: the threshold stays raised until the last one closes."""
    first = Runtime(aggregates=[Account], store=MemoryStore())
    second = Runtime(aggregates=[Account], store=MemoryStore(), gc_threshold=80_000)
    await first.__aenter__()
    try:
        async with second:
            assert gc.get_threshold()[0] == 80_000
        # The first still holds its own (lower) value.
        assert gc.get_threshold()[0] == DEFAULT_GC_THRESHOLD
    finally:
        await first.__aexit__(None, None, None)
    assert gc.get_threshold() == gc_thresholds


async def test_gc_threshold_changed_meanwhile_is_left_alone(
    gc_thresholds: tuple[int, int, int],
) -> None:
    """If the application changes the thresholds while the runtime is open, exit keeps theirs."""
    async with Runtime(aggregates=[Account], store=MemoryStore(), gc_threshold=5_000):
        gc.set_threshold(4_321, *gc_thresholds[1:])
    assert gc.get_threshold() == (4_321, *gc_thresholds[1:])


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10000"])
async def test_invalid_gc_threshold(value: object) -> None:
    """A bad gc_threshold raises InvalidArgument and leaves the GC alone."""
    before = gc.get_threshold()
    with pytest.raises(InvalidArgument):
        Runtime(aggregates=[Account], store=MemoryStore(), gc_threshold=value)  # type: ignore[arg-type]
    assert gc.get_threshold() == before


async def test_sqlite_outcome_survives_the_runtime(tmp_path: Path) -> None:
    """An outcome's events can be read after the runtime and its store have closed."""
    async with Runtime(aggregates=[Account], store=SQLiteStore(tmp_path / "e.db")) as rt:
        out = await rt.ask(ACC, Open(owner="ann"))
    assert [(e.type, e.data, e.version, e.position) for e in out.events] == [
        ("Account.Opened", {"owner": "ann"}, 1, 1)
    ]


class KeepsItsEvents(Account, category="KeepsItsEvents"):
    """An aggregate whose handle override returns a list it keeps."""

    kept: list[object]

    def handle(self, command: object) -> tuple[list[object], object]:  # type: ignore[override]
        events, value = super().handle(command)  # type: ignore[arg-type]
        self.kept = events
        return events, value


async def test_overridden_handle_keeps_its_own_list_of_events() -> None:
    """The runtime reuses only Aggregate.handle's fresh list: an override's stays untouched."""
    address = Address("KeepsItsEvents", "1")
    async with Runtime(aggregates=[KeepsItsEvents], store=MemoryStore()) as rt:
        out = await rt.ask(address, Open(owner="ann"))
        actor = rt._directory.get(address)
    assert out.version == 1
    assert actor is not None
    assert actor.state is not None
    kept = actor.state.kept  # type: ignore[attr-defined]
    assert [type(e).__name__ for e in kept] == ["AccountOpened"]
