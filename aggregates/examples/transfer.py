"""Money transfers between bank accounts: the pure part of a process manager.

A transfer is an aggregate that records each fact of the process
(started, debited, credited, rejected, refunded), and :func:`next_step` is
the decision: given the transfer's latest event, which command goes to
which account next, and what to record on the transfer when the account
accepts or rejects it. The process manager that runs it (in
``runtime/examples/transfers.py``) does the I/O. Because every outcome the
process depends on is recorded as a transfer event before the next step is
taken, each step is triggered by exactly one stored event and can be
replayed safely.

Flow::

    Started --withdraw(source)--> Debited --deposit(destination)--> Completed
       \\ rejected: DebitRejected     \\ rejected: CreditRejected
                                           --deposit(source)--> Refunded
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aggregates import Aggregate, Command, DomainError, Event, applies, handles
from aggregates.examples.bank import Deposit, Withdraw

__all__ = [
    "CreditRejected",
    "Debited",
    "DebitRejected",
    "RecordCredit",
    "RecordCreditRejected",
    "RecordDebit",
    "RecordDebitRejected",
    "RecordRefund",
    "Refunded",
    "StartTransfer",
    "Step",
    "Transfer",
    "TransferCompleted",
    "TransferError",
    "TransferStarted",
    "next_step",
]


class TransferError(DomainError):
    """A transfer rejected a command (wrong state or bad amount)."""


# Commands -----------------------------------------------------------------


class StartTransfer(Command):
    """Start moving ``amount`` cents from ``source`` to ``destination`` (account ids)."""

    source: str
    destination: str
    amount: int


class RecordDebit(Command):
    """The source account accepted the withdrawal."""


class RecordDebitRejected(Command):
    """The source account rejected the withdrawal."""

    reason: str


class RecordCredit(Command):
    """The destination account accepted the deposit."""


class RecordCreditRejected(Command):
    """The destination account rejected the deposit: the source must be refunded."""

    reason: str


class RecordRefund(Command):
    """The source account took the refund back."""


# Events -------------------------------------------------------------------


class TransferStarted(Event, name="Transfer.Started"):
    """A transfer was requested."""

    source: str
    destination: str
    amount: int


class Debited(Event, name="Transfer.Debited"):
    """The money left the source account."""

    source: str
    destination: str
    amount: int


class DebitRejected(Event, name="Transfer.DebitRejected"):
    """The source refused the withdrawal; nothing moved. Final."""

    reason: str


class TransferCompleted(Event, name="Transfer.Completed"):
    """The money reached the destination. Final."""


class CreditRejected(Event, name="Transfer.CreditRejected"):
    """The destination refused the deposit; the source is owed a refund."""

    source: str
    amount: int
    reason: str


class Refunded(Event, name="Transfer.Refunded"):
    """The source got its money back (the compensation). Final."""


# The aggregate ------------------------------------------------------------


class Transfer(Aggregate, category="Transfer"):
    """A transfer's state: ``new -> started -> debited -> completed``, or a failed branch."""

    def __init__(self) -> None:
        self.status = "new"
        self.source = ""
        self.destination = ""
        self.amount = 0
        self.reason = ""

    def _require(self, status: str) -> None:
        if self.status != status:
            raise TransferError(f"transfer is {self.status}, not {status}")

    @handles
    def start(self, cmd: StartTransfer) -> Event:
        self._require("new")
        if cmd.amount <= 0:
            raise TransferError("amount must be positive")
        if cmd.source == cmd.destination:
            raise TransferError("source and destination must differ")
        return TransferStarted(cmd.source, cmd.destination, cmd.amount)

    @handles
    def record_debit(self, cmd: RecordDebit) -> Event:
        self._require("started")
        return Debited(self.source, self.destination, self.amount)

    @handles
    def record_debit_rejected(self, cmd: RecordDebitRejected) -> Event:
        self._require("started")
        return DebitRejected(cmd.reason)

    @handles
    def record_credit(self, cmd: RecordCredit) -> Event:
        self._require("debited")
        return TransferCompleted()

    @handles
    def record_credit_rejected(self, cmd: RecordCreditRejected) -> Event:
        self._require("debited")
        return CreditRejected(self.source, self.amount, cmd.reason)

    @handles
    def record_refund(self, cmd: RecordRefund) -> Event:
        self._require("refunding")
        return Refunded()

    @applies
    def _started(self, e: TransferStarted) -> None:
        self.status, self.source, self.destination, self.amount = (
            "started",
            e.source,
            e.destination,
            e.amount,
        )

    @applies
    def _debited(self, e: Debited) -> None:
        self.status = "debited"

    @applies
    def _debit_rejected(self, e: DebitRejected) -> None:
        self.status, self.reason = "failed", e.reason

    @applies
    def _completed(self, e: TransferCompleted) -> None:
        self.status = "completed"

    @applies
    def _credit_rejected(self, e: CreditRejected) -> None:
        self.status, self.reason = "refunding", e.reason

    @applies
    def _refunded(self, e: Refunded) -> None:
        self.status = "refunded"


# The decision -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a transfer: a command to an account and what to record after it.

    Attributes:
        name: The step's name (part of the command ids, so unique per event).
        account: The account id the command goes to.
        command: The command for the account.
        on_accepted: The command for the transfer when the account accepts.
        on_rejected: Builds the command for the transfer from the rejection's
            reason; None when a rejection must not happen (a refund) and is
            an error of the process.
    """

    name: str
    account: str
    command: Command
    on_accepted: Command
    on_rejected: Callable[[str], Command] | None


def next_step(event: Event) -> Step | None:
    """The step a transfer event calls for, or None (final events, unknown ones)."""
    if isinstance(event, TransferStarted):
        return Step(
            "debit", event.source, Withdraw(event.amount), RecordDebit(), RecordDebitRejected
        )
    if isinstance(event, Debited):
        return Step(
            "credit",
            event.destination,
            Deposit(event.amount),
            RecordCredit(),
            RecordCreditRejected,
        )
    if isinstance(event, CreditRejected):
        return Step("refund", event.source, Deposit(event.amount), RecordRefund(), None)
    return None
