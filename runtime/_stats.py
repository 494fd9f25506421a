"""Runtime counters and the immutable :class:`RuntimeStatistics` snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from stores import StoreStatistics

__all__ = ["RuntimeStatistics"]


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """An immutable snapshot of the runtime's counters (``Runtime.statistics()``).

    Attributes:
        live_actors: Actors in memory now (activated or activating).
        mailbox_max: The deepest mailbox now (commands queued or waiting to enter).
        mailbox_total: Commands queued across all mailboxes now.
        commands: Commands that completed (recorded, query answered or rejected).
        rejected: Commands whose handler raised (a subset of ``commands``).
        duplicates: Commands answered from an already recorded command id.
        conflicts: Appends that hit a ``ConcurrencyError`` (another writer first).
        retries: Commands re-run after a conflict.
        activations: Actors activated (loaded from the log).
        activation_mean_s: Mean activation time in seconds.
        activation_max_s: Longest activation time in seconds.
        passivations: Actors dropped from memory (idle timeout or the live-actor cap).
        resets: Actors reset after an applier failed on a stored event (a bug).
        snapshots: Snapshots saved.
        dead_letters: ``tell`` commands that failed or were refused.
        workers: Worker tasks running turns now.
        store: The store's own statistics (group-commit batch sizes).
    """

    live_actors: int
    mailbox_max: int
    mailbox_total: int
    commands: int
    rejected: int
    duplicates: int
    conflicts: int
    retries: int
    activations: int
    activation_mean_s: float
    activation_max_s: float
    passivations: int
    resets: int
    snapshots: int
    dead_letters: int
    workers: int
    store: StoreStatistics


class Counters:
    """Mutable counters the runtime bumps on its hot path (plain ints: cheap)."""

    __slots__ = (
        "activation_max",
        "activation_total",
        "activations",
        "commands",
        "conflicts",
        "dead_letters",
        "duplicates",
        "passivations",
        "rejected",
        "resets",
        "retries",
        "snapshots",
    )

    def __init__(self) -> None:
        self.commands = 0
        self.rejected = 0
        self.duplicates = 0
        self.conflicts = 0
        self.retries = 0
        self.activations = 0
        self.activation_total = 0.0
        self.activation_max = 0.0
        self.passivations = 0
        self.resets = 0
        self.snapshots = 0
        self.dead_letters = 0
