"""The bank example written for the ``eventsourcing`` library (its documented style).

Module level on purpose: eventsourcing finds classes again by topic
(``module:qualname``), so they must be importable. Imported only by
``--compare eventsourcing``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication

__all__ = ["Bank", "BankAccount", "BankWithSnapshots", "DepositCounter"]


class BankAccount(Aggregate):
    """An account: opened with an owner, then deposits."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        """Record a deposit."""
        self.balance += amount


# The event class the @event decorator generated (invisible to type checkers).
_DEPOSITED: type = getattr(BankAccount, "Deposited")  # noqa: B009


class Bank(Application[UUID]):
    """Commands as the library's docs write them: get, call, save."""

    def open(self, owner: str) -> UUID:
        """Open an account; return its id."""
        account = BankAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: int) -> None:
        """Load the account, deposit, save (one transaction)."""
        account: BankAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)

    def balance(self, account_id: UUID) -> int:
        """The account's balance."""
        account: BankAccount = self.repository.get(account_id)
        return int(account.balance)


class BankWithSnapshots(Bank):
    """The same bank with the snapshot store enabled (``take_snapshot``)."""

    is_snapshotting_enabled = True


class DepositCounter(ProcessApplication[UUID]):
    """A follower counting deposits (its tracking records make it exactly-once)."""

    count = 0

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        """Count each deposit."""
        if isinstance(domain_event, _DEPOSITED):
            self.count += 1
