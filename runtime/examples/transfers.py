"""Wiring for the money-transfer process manager (the decision is in aggregates/examples)."""

from __future__ import annotations

from typing import Any

from aggregates import DomainError, EventRegistry
from aggregates.examples.transfer import Transfer, next_step
from runtime._address import Address
from runtime._process_manager import ProcessContext, ProcessManager
from stores import RecordedEvent

__all__ = ["transfer_process_manager"]


def transfer_process_manager(name: str = "transfers", **options: Any) -> ProcessManager:
    """A process manager that runs transfers: debit, credit, refund on rejection.

    Each step sends the account command, then records the account's answer
    on the transfer (accepted or rejected), with command ids derived from
    the triggering transfer event, so a replay repeats no effect.

    Args:
        name: The process manager's name.
        **options: Passed to :class:`ProcessManager` (sender, policy, ...).
    """
    registry = EventRegistry()
    registry.register_aggregate(Transfer)

    async def handle(event: RecordedEvent, context: ProcessContext) -> None:
        step = next_step(registry.decode(event.type, event.schema_version, event.data))
        if step is None:
            return
        transfer = Address("Transfer", event.stream.partition("-")[2])
        try:
            await context.ask(Address("Account", step.account), step.command, step=step.name)
        except DomainError as exc:
            if step.on_rejected is None:
                raise
            await context.ask(transfer, step.on_rejected(str(exc)), step=f"{step.name}.rejected")
            return
        await context.ask(transfer, step.on_accepted, step=f"{step.name}.accepted")

    return ProcessManager(name, handle, categories=["Transfer"], **options)
