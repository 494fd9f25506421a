"""Bank accounts: open, deposit, withdraw (rejected on insufficient funds), close."""

from __future__ import annotations

from aggregates import Aggregate, Command, DomainError, Event, Reply, applies, handles

__all__ = [
    "Account",
    "AccountClosed",
    "AccountError",
    "AccountOpened",
    "Close",
    "Deposit",
    "Deposited",
    "GetBalance",
    "InsufficientFunds",
    "Open",
    "Withdraw",
    "Withdrawn",
]


class AccountError(DomainError):
    """An account rejected a command."""


class InsufficientFunds(AccountError):
    """A withdrawal is larger than the balance."""


# Commands -----------------------------------------------------------------


class Open(Command):
    """Open the account for an owner."""

    owner: str


class Deposit(Command):
    """Add money (in cents) to an open account."""

    amount: int


class Withdraw(Command):
    """Take money (in cents) from an open account; rejected past the balance."""

    amount: int


class Close(Command):
    """Close the account (its balance must be zero)."""


class GetBalance(Command):
    """A query: reply with the balance, record nothing."""


# Events -------------------------------------------------------------------


class AccountOpened(Event, name="Account.Opened"):
    """The account was opened."""

    owner: str


class Deposited(Event, name="Account.Deposited"):
    """Money was added."""

    amount: int


class Withdrawn(Event, name="Account.Withdrawn"):
    """Money was taken."""

    amount: int


class AccountClosed(Event, name="Account.Closed"):
    """The account was closed."""


# The aggregate ------------------------------------------------------------


class Account(Aggregate, category="Account"):
    """A bank account with a balance in cents."""

    snapshot_every = 1000

    def __init__(self) -> None:
        self.owner: str | None = None
        self.balance = 0
        self.is_open = False
        self.closed = False

    def _require_open(self) -> None:
        if not self.is_open:
            raise AccountError("account is not open")

    @handles
    def open(self, cmd: Open) -> Event:
        if self.is_open or self.closed:
            raise AccountError("account already opened")
        if not cmd.owner:
            raise AccountError("owner is required")
        return AccountOpened(owner=cmd.owner)

    @handles
    def deposit(self, cmd: Deposit) -> Event:
        self._require_open()
        if cmd.amount <= 0:
            raise AccountError("deposit must be positive")
        return Deposited(amount=cmd.amount)

    @handles
    def withdraw(self, cmd: Withdraw) -> Event:
        self._require_open()
        if cmd.amount <= 0:
            raise AccountError("withdrawal must be positive")
        if cmd.amount > self.balance:
            raise InsufficientFunds(f"balance {self.balance} < withdrawal {cmd.amount}")
        return Withdrawn(amount=cmd.amount)

    @handles
    def close(self, cmd: Close) -> Event:
        self._require_open()
        if self.balance != 0:
            raise AccountError(f"cannot close with balance {self.balance}")
        return AccountClosed()

    @handles
    def get_balance(self, cmd: GetBalance) -> Reply:
        return Reply(self.balance)

    @applies
    def _opened(self, e: AccountOpened) -> None:
        self.owner = e.owner
        self.is_open = True

    @applies
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount

    @applies
    def _withdrawn(self, e: Withdrawn) -> None:
        self.balance -= e.amount

    @applies
    def _closed(self, e: AccountClosed) -> None:
        self.is_open = False
        self.closed = True
