"""Example read models: account balances and an order summary, with their queries.

Each is a :class:`~runtime.SQLiteProjector` in a file of its own; the
queries are plain async functions over :meth:`SQLiteProjector.query`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime._projection_sqlite import SQLiteProjector
from stores import RecordedEvent

__all__ = [
    "ACCOUNT_EVENTS",
    "ORDER_EVENTS",
    "AccountBalance",
    "OrderSummary",
    "account_balances",
    "get_balance",
    "get_order",
    "list_balances",
    "order_counts",
    "order_summary",
    "orders_of",
    "total_balance",
]

# -- account balances ---------------------------------------------------------

ACCOUNT_EVENTS = ("Account.Opened", "Account.Deposited", "Account.Withdrawn", "Account.Closed")

_ACCOUNT_SCHEMA = """
CREATE TABLE account_balances (
    account_id TEXT PRIMARY KEY,
    owner      TEXT,
    balance    INTEGER NOT NULL DEFAULT 0,
    is_open    INTEGER NOT NULL DEFAULT 0,
    events     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""

_UPSERT_BALANCE = (
    "INSERT INTO account_balances (account_id, balance, events) VALUES (?, ?, 1) "
    "ON CONFLICT (account_id) DO UPDATE SET balance = balance + excluded.balance, "
    "events = events + 1"
)


def _account_id(event: RecordedEvent) -> str:
    return event.stream.partition("-")[2]


def _opened(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    conn.execute(
        "INSERT INTO account_balances (account_id, owner, is_open, events) VALUES (?, ?, 1, 1) "
        "ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, is_open = 1, "
        "events = events + 1",
        (_account_id(event), event.data["owner"]),
    )


def _deposited(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    conn.execute(_UPSERT_BALANCE, (_account_id(event), event.data["amount"]))


def _withdrawn(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    conn.execute(_UPSERT_BALANCE, (_account_id(event), -event.data["amount"]))


def _closed(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    conn.execute(
        "INSERT INTO account_balances (account_id, is_open, events) VALUES (?, 0, 1) "
        "ON CONFLICT (account_id) DO UPDATE SET is_open = 0, events = events + 1",
        (_account_id(event),),
    )


_ACCOUNT_HANDLERS: dict[str, Callable[[sqlite3.Connection, RecordedEvent], None]] = {
    "Account.Opened": _opened,
    "Account.Deposited": _deposited,
    "Account.Withdrawn": _withdrawn,
    "Account.Closed": _closed,
}


def _apply_account_event(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    _ACCOUNT_HANDLERS[event.type](conn, event)


# One row per account touched by a batch: NULL owner / is_open mean "unchanged".
_FOLD_UPSERT = (
    "INSERT INTO account_balances (account_id, owner, balance, is_open, events) "
    "VALUES (:id, :owner, :delta, coalesce(:open, 0), :count) "
    "ON CONFLICT (account_id) DO UPDATE SET owner = coalesce(:owner, owner), "
    "balance = balance + :delta, is_open = coalesce(:open, is_open), events = events + :count"
)


def _apply_account_batch(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """Fold a batch per account first, then write one row per account (same result).

    A batch of thousands of deposits over a few hundred accounts becomes a
    few hundred upserts instead of thousands: the rebuild's hot path.
    """
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        account = event.stream.partition("-")[2]
        row = rows.get(account)
        if row is None:
            row = rows[account] = {
                "id": account,
                "owner": None,
                "delta": 0,
                "open": None,
                "count": 0,
            }
        row["count"] += 1
        kind = event.type
        if kind == "Account.Deposited":
            row["delta"] += event.data["amount"]
        elif kind == "Account.Withdrawn":
            row["delta"] -= event.data["amount"]
        elif kind == "Account.Opened":
            row["owner"], row["open"] = event.data["owner"], 1
        elif kind == "Account.Closed":
            row["open"] = 0
        else:
            raise ValueError(f"account_balances does not handle {kind!r}")
    conn.executemany(_FOLD_UPSERT, rows.values())


def account_balances(
    directory: Path | str, *, name: str = "account_balances", **options: Any
) -> SQLiteProjector:
    """The account-balances read model (one row per account).

    Args:
        directory: Where its database files live.
        name: The projector's name.
        **options: Passed to :class:`SQLiteProjector` (policy, batch_size, ...).
            A ``handler`` given here replaces the default folding batch handler.
    """
    handler = options.pop("handler", None)
    return SQLiteProjector(
        name,
        directory,
        schema=_ACCOUNT_SCHEMA,
        handler=handler or _apply_account_event,
        # The folding batch handler, unless a custom per-event handler is given.
        batch_handler=options.pop("batch_handler", None if handler else _apply_account_batch),
        types=ACCOUNT_EVENTS,
        **options,
    )


@dataclass(frozen=True, slots=True)
class AccountBalance:
    """One account as the read model sees it.

    Attributes:
        account_id: The account id.
        owner: Its owner (None if its opening was not seen).
        balance: Its balance in cents.
        is_open: Whether it is open.
        events: How many of its events were applied (a duplicate detector).
    """

    account_id: str
    owner: str | None
    balance: int
    is_open: bool
    events: int


_BALANCE_COLUMNS = "account_id, owner, balance, is_open, events"


def _balance(row: tuple[Any, ...]) -> AccountBalance:
    return AccountBalance(row[0], row[1], row[2], bool(row[3]), row[4])


async def get_balance(model: SQLiteProjector, account_id: str) -> AccountBalance | None:
    """One account's balance, or None when the read model has never seen it."""

    def run(conn: sqlite3.Connection) -> AccountBalance | None:
        row = conn.execute(
            f"SELECT {_BALANCE_COLUMNS} FROM account_balances WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        return None if row is None else _balance(row)

    return await model.query(run)


async def list_balances(model: SQLiteProjector) -> list[AccountBalance]:
    """Every account, ordered by id."""

    def run(conn: sqlite3.Connection) -> list[AccountBalance]:
        rows = conn.execute(
            f"SELECT {_BALANCE_COLUMNS} FROM account_balances ORDER BY account_id"
        ).fetchall()
        return [_balance(row) for row in rows]

    return await model.query(run)


async def total_balance(model: SQLiteProjector) -> int:
    """The sum of all balances (transfers keep it constant)."""
    return await model.query(
        lambda conn: int(
            conn.execute("SELECT coalesce(sum(balance), 0) FROM account_balances").fetchone()[0]
        )
    )


# -- order summary ------------------------------------------------------------

ORDER_EVENTS = (
    "Order.Placed",
    "Order.LineAdded",
    "Order.Confirmed",
    "Order.Shipped",
    "Order.Cancelled",
)

_ORDER_SCHEMA = """
CREATE TABLE order_summary (
    order_id  TEXT PRIMARY KEY,
    customer  TEXT NOT NULL DEFAULT '',
    status    TEXT NOT NULL DEFAULT 'placed',
    lines     INTEGER NOT NULL DEFAULT 0,
    items     INTEGER NOT NULL DEFAULT 0,
    total     INTEGER NOT NULL DEFAULT 0,
    placed_at TEXT
) WITHOUT ROWID;
CREATE INDEX order_summary_customer ON order_summary (customer)
"""

_ORDER_STATUS = {
    "Order.Confirmed": "confirmed",
    "Order.Shipped": "shipped",
    "Order.Cancelled": "cancelled",
}


def _apply_order_event(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    order_id = event.stream.partition("-")[2]
    if event.type == "Order.Placed":
        conn.execute(
            "INSERT INTO order_summary (order_id, customer, placed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, "
            "placed_at = excluded.placed_at",
            (order_id, event.data["customer"], event.recorded_at.isoformat()),
        )
    elif event.type == "Order.LineAdded":
        quantity, price = event.data["quantity"], event.data["unit_price"]
        conn.execute(
            "INSERT INTO order_summary (order_id, lines, items, total) VALUES (?, 1, ?, ?) "
            "ON CONFLICT (order_id) DO UPDATE SET lines = lines + 1, "
            "items = items + excluded.items, total = total + excluded.total",
            (order_id, quantity, quantity * price),
        )
    else:
        conn.execute(
            "UPDATE order_summary SET status = ? WHERE order_id = ?",
            (_ORDER_STATUS[event.type], order_id),
        )


def order_summary(
    directory: Path | str, *, name: str = "order_summary", **options: Any
) -> SQLiteProjector:
    """The order-summary read model (one row per order: status, lines, total).

    Args:
        directory: Where its database files live.
        name: The projector's name.
        **options: Passed to :class:`SQLiteProjector`.
    """
    return SQLiteProjector(
        name,
        directory,
        schema=_ORDER_SCHEMA,
        handler=options.pop("handler", _apply_order_event),
        types=ORDER_EVENTS,
        **options,
    )


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """One order as the read model sees it.

    Attributes:
        order_id: The order id.
        customer: The customer.
        status: ``placed``, ``confirmed``, ``shipped`` or ``cancelled``.
        lines: Number of lines.
        items: Total quantity over the lines.
        total: Total price in cents.
    """

    order_id: str
    customer: str
    status: str
    lines: int
    items: int
    total: int


_ORDER_COLUMNS = "order_id, customer, status, lines, items, total"


async def get_order(model: SQLiteProjector, order_id: str) -> OrderSummary | None:
    """One order's summary, or None."""

    def run(conn: sqlite3.Connection) -> OrderSummary | None:
        row = conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM order_summary WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if row is None else OrderSummary(*row)

    return await model.query(run)


async def orders_of(model: SQLiteProjector, customer: str) -> list[OrderSummary]:
    """A customer's orders, ordered by id."""

    def run(conn: sqlite3.Connection) -> list[OrderSummary]:
        rows = conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM order_summary WHERE customer = ? ORDER BY order_id",
            (customer,),
        ).fetchall()
        return [OrderSummary(*row) for row in rows]

    return await model.query(run)


async def order_counts(model: SQLiteProjector) -> dict[str, int]:
    """How many orders are in each status."""

    def run(conn: sqlite3.Connection) -> dict[str, int]:
        rows = conn.execute("SELECT status, count(*) FROM order_summary GROUP BY status")
        return dict(rows)

    return await model.query(run)
