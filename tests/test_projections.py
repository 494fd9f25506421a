"""SQLite read-model projectors: end to end, checkpoints, catch-up, slow handlers, filters."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
import structlog

from aggregates.examples.bank import Account, Deposit, Open
from runtime import Address, Runtime
from runtime._projection_engine import ProjectionEngine
from runtime._projection_errors import (
    ProjectionConfigError,
    ProjectorNotRunning,
    UnknownProjector,
)
from runtime._projection_sqlite import SQLiteProjector
from runtime._projection_sqlite_file import open_read_model
from runtime._projection_store import StoreProjector
from runtime.examples.read_models import (
    account_balances,
    get_balance,
    get_order,
    list_balances,
    order_counts,
    order_summary,
    orders_of,
    total_balance,
)
from stores import ANY, EventStore, MemoryStore, NewEvent, RecordedEvent, SQLiteStore
from tests.projection_child import deposited, opened, write_bank

LOG_SCHEMA = "CREATE TABLE seen (position INTEGER PRIMARY KEY, type TEXT NOT NULL)"


def log_positions(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    """A handler that records each event's position (a duplicate would fail the PK)."""
    conn.execute("INSERT INTO seen VALUES (?, ?)", (event.position, event.type))


def seen(directory: Path, name: str) -> list[int]:
    """The positions a ``log_positions`` read model holds, in order."""
    conn = open_read_model(directory, name)
    try:
        return [row[0] for row in conn.execute("SELECT position FROM seen ORDER BY position")]
    finally:
        conn.close()


@pytest.mark.anyio
async def test_events_to_read_model_to_query(tmp_path: Path) -> None:
    """Committed events reach both example read models and their queries answer from them."""
    balances = account_balances(tmp_path)
    orders = order_summary(tmp_path)
    async with MemoryStore() as store, ProjectionEngine(store, [balances, orders]) as engine:
        await store.append("Account-a", [opened("ann"), deposited(500), deposited(250)], 0)
        await store.append("Account-b", [opened("bob"), deposited(100)], 0)
        await store.append("Account-a", [NewEvent("Account.Withdrawn", {"amount": 50})], 3)
        await store.append("Order-1", [NewEvent("Order.Placed", {"customer": "ann"})], 0)
        line = {"sku": "x", "quantity": 2, "unit_price": 150}
        await store.append("Order-1", [NewEvent("Order.LineAdded", line)] * 2, 1)
        await store.append("Order-1", [NewEvent("Order.Confirmed", {})], 3)
        await store.append("Order-2", [NewEvent("Order.Placed", {"customer": "ann"})], 0)
        result = await store.append("Order-2", [NewEvent("Order.Cancelled", {"reason": ""})], 1)
        await engine.wait_for(result.positions[-1], timeout=10)

        a = await get_balance(balances, "a")
        assert a is not None
        assert (a.owner, a.balance, a.is_open, a.events) == ("ann", 700, True, 4)
        assert await get_balance(balances, "nobody") is None
        assert [b.account_id for b in await list_balances(balances)] == ["a", "b"]
        assert await total_balance(balances) == 800
        order = await get_order(orders, "1")
        assert order is not None
        assert (order.status, order.lines, order.items, order.total) == ("confirmed", 2, 4, 600)
        assert [o.order_id for o in await orders_of(orders, "ann")] == ["1", "2"]
        assert await order_counts(orders) == {"confirmed": 1, "cancelled": 1}


@pytest.mark.anyio
async def test_restart_catches_up_from_checkpoint_exactly_once(tmp_path: Path) -> None:
    """A restarted projector goes on from its checkpoint: no event applied twice or missed."""
    async with MemoryStore() as store:
        await write_bank(store, accounts=5, rounds=30)
        projector = SQLiteProjector("log", tmp_path, schema=LOG_SCHEMA, handler=log_positions)
        async with ProjectionEngine(store, [projector], page_size=40):
            await projector.wait_for(await store.head())
        last = await write_bank(store, accounts=5, rounds=30, start=30)
        again = SQLiteProjector("log", tmp_path, schema=LOG_SCHEMA, handler=log_positions)
        async with ProjectionEngine(store, [again], page_size=40):
            await again.wait_for(last)
            assert again.statistics().checkpoint == last
    assert seen(tmp_path, "log") == list(range(1, last + 1))


@pytest.mark.anyio
async def test_filtered_checkpoint_advances_over_unwanted_events(tmp_path: Path) -> None:
    """1,000 unwanted events move a filtered projector's checkpoint, live and from the log."""
    async with MemoryStore() as store:
        await store.append("Account-1", [opened("x")], 0)
        for _ in range(500):
            await store.append("Noise-1", [NewEvent("Noise.Made", {})], ANY)
        projector = account_balances(tmp_path, checkpoint_interval=0)
        async with ProjectionEngine(store, [projector], page_size=64):
            await projector.wait_for(501)
            for _ in range(500):
                await store.append("Noise-1", [NewEvent("Noise.Made", {})], ANY)
            await projector.wait_for(1001)
            stats = projector.statistics()
            assert (stats.position, stats.checkpoint, stats.lag_events) == (1001, 1001, 0)
            assert stats.events_handled == 1
        conn = open_read_model(tmp_path, "account_balances")
        row = conn.execute("SELECT position FROM _projection_checkpoint").fetchone()
        conn.close()
        assert row == (1001,)


@pytest.mark.anyio
@pytest.mark.parametrize(("batch_size", "buffer_size"), [(7, 16), (500, 10_000)])
async def test_slow_handler_does_not_hold_up_writers(
    tmp_path: Path, batch_size: int, buffer_size: int
) -> None:
    """Appends complete while the handler is blocked; afterwards every event lands in order.

    With a small live buffer the subscriber overflows to reading the log; with
    a large one it stays live, its pages are large enough for the GIL hand-off,
    and the hand-off's bounded wait gives up on the stuck batch.
    """
    gate = threading.Event()
    blocked = threading.Event()

    def slow(conn: sqlite3.Connection, event: RecordedEvent) -> None:
        blocked.set()
        gate.wait(10)
        log_positions(conn, event)

    projector = SQLiteProjector(
        "slow", tmp_path, schema=LOG_SCHEMA, handler=slow, batch_size=batch_size
    )
    async with (
        SQLiteStore(tmp_path / "events.db") as store,
        ProjectionEngine(store, [projector], buffer_size=buffer_size) as engine,
    ):
        await store.append("S-0", [NewEvent("T.A", {})], ANY)
        await anyio.to_thread.run_sync(blocked.wait, 10)
        # The handler is stuck inside a batch: the writers still finish a burst.
        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(store.append, f"S-{n}", [NewEvent("T.A", {})] * 25, ANY)
        assert projector.position == 0
        if buffer_size < 1000:
            assert engine.bus.statistics().overflows >= 1
        else:
            assert engine.bus.statistics().overflows == 0
            sink = projector._sink
            assert sink is not None
            assert sink._worker.handoff_timeouts >= 1  # type: ignore[attr-defined]
        gate.set()
        await projector.wait_for(1001, timeout=30)
    assert seen(tmp_path, "slow") == list(range(1, 1002))


@pytest.mark.anyio
async def test_wait_for_needs_a_running_projector(tmp_path: Path) -> None:
    """wait_for on a projector outside a running engine raises ProjectorNotRunning."""
    projector = account_balances(tmp_path)
    with pytest.raises(ProjectorNotRunning):
        await projector.wait_for(1, timeout=1)
    async with MemoryStore() as store:
        async with ProjectionEngine(store, [projector]) as engine:
            assert engine["account_balances"] is projector
            with pytest.raises(UnknownProjector):
                engine["nope"]
        with pytest.raises(ProjectorNotRunning):
            await projector.wait_for(1, timeout=1)


def test_bad_settings_raise_config_errors(tmp_path: Path) -> None:
    """Invalid names, sizes, filters and duplicate projectors are refused up front."""
    with pytest.raises(ProjectionConfigError):
        SQLiteProjector("../x", tmp_path, schema="", handler=log_positions)
    with pytest.raises(ProjectionConfigError):
        SQLiteProjector("x", tmp_path, schema="", handler=log_positions, batch_size=0)
    with pytest.raises(ProjectionConfigError):
        SQLiteProjector("x", tmp_path, schema="", handler=log_positions, types="Account.Opened")
    with pytest.raises(ProjectionConfigError):
        SQLiteProjector("x", tmp_path, schema="", handler=log_positions, max_attempts=0)
    with pytest.raises(ProjectionConfigError):
        ProjectionEngine(MemoryStore(), [account_balances(tmp_path), account_balances(tmp_path)])


@pytest.mark.anyio
async def test_projectors_on_every_store_backend(store: EventStore, tmp_path: Path) -> None:
    """The SQLite read model and a generic projector follow each backend exactly."""
    handled: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        handled.append(event.position)

    balances = account_balances(tmp_path)
    generic = StoreProjector("generic", handler, categories=["Account"])
    async with ProjectionEngine(store, [balances, generic]) as engine:
        await write_bank(store, accounts=3, rounds=4)
        last = await write_bank(store, accounts=3, rounds=4, start=4, per_append=3)
        await engine.wait_for(last, timeout=30)
        rows = await list_balances(balances)
    # Deposits of 1 + r % 7 cents, a withdrawal of 1 every third round.
    per_account = (
        sum(1 + r % 7 for r in range(4)) - 1 + sum(3 * (1 + r % 7) for r in range(4, 8)) - 1
    )
    assert [(b.account_id, b.balance) for b in rows] == [(str(a), per_account) for a in range(3)]
    assert handled == list(range(1, last + 1))
    assert await store.get_checkpoint("generic") == last


@pytest.mark.anyio
async def test_handler_sees_the_starters_contextvars_and_its_name(tmp_path: Path) -> None:
    """On the read model's thread the handler sees the starter's contextvars and projector=name."""
    contexts: list[tuple[str, dict[str, object]]] = []

    def handler(conn: sqlite3.Connection, event: RecordedEvent) -> None:
        contexts.append((threading.current_thread().name, structlog.contextvars.get_contextvars()))
        log_positions(conn, event)

    projector = SQLiteProjector("ctx", tmp_path, schema=LOG_SCHEMA, handler=handler)
    with structlog.contextvars.bound_contextvars(request_id="r1"):
        async with Runtime(aggregates=[Account], store=MemoryStore(), projectors=[projector]) as rt:
            acc = Address("Account", "1")
            await rt.ask(acc, Open(owner="ada"))
            outcome = await rt.ask(acc, Deposit(amount=5))
            await projector.wait_for(outcome.positions[-1], timeout=10)
            # A fresh generation (reset to 0, rebuild) gets a thread of its own: the same context.
            await projector.reset(0)
            await projector.wait_for(outcome.positions[-1], timeout=10)
            await rt.projections.rebuild("ctx", display=False)
            # Bound on the thread's copy only: the starter's context is unchanged.
            assert structlog.contextvars.get_contextvars() == {"request_id": "r1"}
    assert len(contexts) == 6
    assert all(ctx == {"request_id": "r1", "projector": "ctx"} for _, ctx in contexts)
    assert threading.current_thread().name not in {thread for thread, _ in contexts}
