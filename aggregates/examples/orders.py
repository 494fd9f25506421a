"""Orders: place, add line, confirm, ship, cancel."""

from __future__ import annotations

from typing import Any

from aggregates import Aggregate, Command, DomainError, Event, applies, handles

__all__ = [
    "AddLine",
    "Cancel",
    "Confirm",
    "LineAdded",
    "Order",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderError",
    "OrderPlaced",
    "OrderShipped",
    "PlaceOrder",
    "Ship",
]


class OrderError(DomainError):
    """An order rejected a command."""


# Commands -----------------------------------------------------------------


class PlaceOrder(Command):
    """Place a new order for a customer."""

    customer: str


class AddLine(Command):
    """Add a line (SKU, quantity, unit price in cents) to a placed order."""

    sku: str
    quantity: int
    unit_price: int


class Confirm(Command):
    """Confirm a placed order that has at least one line."""


class Ship(Command):
    """Ship a confirmed order."""


class Cancel(Command):
    """Cancel an order that has not shipped."""

    reason: str = ""


# Events -------------------------------------------------------------------


class OrderPlaced(Event, name="Order.Placed"):
    """The order was placed."""

    customer: str


class LineAdded(Event, name="Order.LineAdded"):
    """A line was added."""

    sku: str
    quantity: int
    unit_price: int


class OrderConfirmed(Event, name="Order.Confirmed"):
    """The order was confirmed."""


class OrderShipped(Event, name="Order.Shipped"):
    """The order was shipped."""


class OrderCancelled(Event, name="Order.Cancelled"):
    """The order was cancelled."""

    reason: str


# The aggregate ------------------------------------------------------------


class Order(Aggregate, category="Order"):
    """An order moving through placed -> confirmed -> shipped (or cancelled)."""

    snapshot_every = 100

    def __init__(self) -> None:
        self.customer: str | None = None
        self.status = "new"
        self.lines: list[dict[str, Any]] = []

    @property
    def total(self) -> int:
        """The order total in cents."""
        return sum(line["quantity"] * line["unit_price"] for line in self.lines)

    @handles
    def place(self, cmd: PlaceOrder) -> Event:
        if self.status != "new":
            raise OrderError(f"order is already {self.status}")
        if not cmd.customer:
            raise OrderError("customer is required")
        return OrderPlaced(customer=cmd.customer)

    @handles
    def add_line(self, cmd: AddLine) -> Event:
        if self.status != "placed":
            raise OrderError(f"cannot add lines to a {self.status} order")
        if cmd.quantity <= 0 or cmd.unit_price < 0 or not cmd.sku:
            raise OrderError("a line needs a SKU, a positive quantity and a price >= 0")
        return LineAdded(sku=cmd.sku, quantity=cmd.quantity, unit_price=cmd.unit_price)

    @handles
    def confirm(self, cmd: Confirm) -> Event:
        if self.status != "placed":
            raise OrderError(f"cannot confirm a {self.status} order")
        if not self.lines:
            raise OrderError("cannot confirm an empty order")
        return OrderConfirmed()

    @handles
    def ship(self, cmd: Ship) -> Event:
        if self.status != "confirmed":
            raise OrderError(f"cannot ship a {self.status} order")
        return OrderShipped()

    @handles
    def cancel(self, cmd: Cancel) -> Event:
        if self.status in ("new", "shipped", "cancelled"):
            raise OrderError(f"cannot cancel a {self.status} order")
        return OrderCancelled(reason=cmd.reason)

    @applies
    def _placed(self, e: OrderPlaced) -> None:
        self.customer = e.customer
        self.status = "placed"

    @applies
    def _line_added(self, e: LineAdded) -> None:
        self.lines.append({"sku": e.sku, "quantity": e.quantity, "unit_price": e.unit_price})

    @applies
    def _confirmed(self, e: OrderConfirmed) -> None:
        self.status = "confirmed"

    @applies
    def _shipped(self, e: OrderShipped) -> None:
        self.status = "shipped"

    @applies
    def _cancelled(self, e: OrderCancelled) -> None:
        self.status = "cancelled"
