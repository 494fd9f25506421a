"""Process managers: projectors whose handlers send commands, idempotently.

A process manager reacts to events by sending commands to aggregates. Each
command's id is derived from the triggering event and a step name
(``f"{event.event_id}:{step}"``), and the runtime answers a repeated command
id with the original outcome without running it again. So when a crash or a
reset makes the process manager see an event twice (its checkpoint lives in
the store: at least once), the commands it already sent have no second
effect. Record every decision that depends on a command's result as an event
(e.g. "deposit rejected") and react to *that* event: then every step of the
process is replay-safe, not only the first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from runtime._errors import ActorStopped, AskTimeout, ConflictRetriesExhausted, RuntimeClosed
from runtime._projection_errors import ProjectionConfigError
from runtime._projection_store import StoreProjector, _StoreSink
from runtime._projection_types import FailurePolicy
from runtime._projector_sink import Sink
from stores import EventStore, RecordedEvent, StoreClosed, StoreUnavailable

__all__ = ["CommandSender", "ProcessContext", "ProcessManager"]


class CommandSender(Protocol):
    """Anything that sends a command to an aggregate address and returns its outcome.

    ``runtime.Runtime`` has this shape; tests may pass a fake.
    """

    async def ask(
        self,
        address: Any,
        command: Any,
        *,
        command_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Any:
        """Send ``command`` to ``address``; a repeated ``command_id`` returns the first outcome."""
        ...


class ProcessContext:
    """What a process manager's handler sends commands through, for one event.

    Attributes:
        event: The triggering event.
        correlation_id: Carried over from the event's metadata (or its event id).
    """

    def __init__(self, event: RecordedEvent, sender: CommandSender) -> None:
        self.event = event
        self._sender = sender
        self.correlation_id: str = str(event.metadata.get("correlation_id") or event.event_id)

    def command_id(self, step: str) -> str:
        """The deterministic command id of one step: ``f"{event_id}:{step}"``."""
        return f"{self.event.event_id}:{step}"

    async def ask(self, address: Any, command: Any, *, step: str) -> Any:
        """Send a command for this event's ``step``; a replay sends the same command id.

        Args:
            address: The target aggregate's address.
            command: The command.
            step: A name unique among the commands this event causes.

        Returns:
            The sender's outcome (the original one when the step already ran).
        """
        if not isinstance(step, str) or not step:
            raise ProjectionConfigError(f"step must be a non-empty str, not {step!r}")
        return await self._sender.ask(
            address,
            command,
            command_id=self.command_id(step),
            correlation_id=self.correlation_id,
            causation_id=self.event.event_id,
        )


# The runtime closing, a reply that did not come in time, writers that kept
# winning: retrying later (same command ids) is right, parking the event is not.
_TRANSIENT: tuple[type[BaseException], ...] = (
    RuntimeClosed,
    ActorStopped,
    AskTimeout,
    ConflictRetriesExhausted,
    StoreUnavailable,
    StoreClosed,
)

ProcessHandler = Callable[[RecordedEvent, ProcessContext], Awaitable[None]]


class ProcessManager(StoreProjector):
    """A projector whose handler sends commands with ids derived from the event.

    Its checkpoint lives in the store (at least once); idempotent command ids
    make the effects happen once.

    Args:
        name: The process manager's name.
        handler: ``await handler(event, context)``; send commands with
            ``context.ask(address, command, step=...)``.
        types: Only events of these type names (None: all).
        categories: Only events of these stream categories (None: all).
        sender: What to send commands through (default: the engine's runtime).
        policy: STOP or PARK once an event failed ``max_attempts`` times.
        dead_letters: A SQLite file for parked events; required with PARK.
        **options: See :class:`Projector`.
    """

    def __init__(
        self,
        name: str,
        handler: ProcessHandler,
        *,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        sender: CommandSender | None = None,
        policy: FailurePolicy = FailurePolicy.STOP,
        dead_letters: Path | str | None = None,
        **options: Any,
    ) -> None:
        if not callable(handler):
            raise ProjectionConfigError("handler must be an async callable")
        self.process = handler
        self.sender = sender

        async def unbound(event: RecordedEvent) -> None:
            raise AssertionError("bound when the process manager starts")

        super().__init__(
            name,
            unbound,
            types=types,
            categories=categories,
            policy=policy,
            dead_letters=dead_letters,
            **options,
        )

    def _validate(self, runtime: Any) -> None:
        sender = self.sender if self.sender is not None else runtime
        if sender is None or not callable(getattr(sender, "ask", None)):
            raise ProjectionConfigError(
                f"process manager {self.name!r} needs a sender: pass sender= or give the "
                "engine a runtime"
            )

    async def _open_sink(self, store: EventStore, runtime: Any) -> Sink:
        self._validate(runtime)
        sender: CommandSender = self.sender if self.sender is not None else runtime
        process = self.process

        async def handle(event: RecordedEvent) -> None:
            await process(event, ProcessContext(event, sender))

        sink = self._make_sink(store, handle, _TRANSIENT)
        assert isinstance(sink, _StoreSink)
        if sink.dead_letters is not None:
            import anyio.to_thread

            await anyio.to_thread.run_sync(sink.dead_letters.open)
        return sink
