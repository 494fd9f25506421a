"""The projection engine: one task group running the bus and every projector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from runtime._bus import EventBus
from runtime._projection_errors import (
    ProjectionConfigError,
    ProjectorNotRunning,
    UnknownProjector,
)
from runtime._projection_types import ProjectorStatistics
from runtime._projector import Projector

if TYPE_CHECKING:
    from runtime._projection_rebuild import RebuildProgress
from stores import EventStore

__all__ = ["ProjectionEngine"]


class ProjectionEngine:
    """Runs an event bus and projectors over a store: ``async with ProjectionEngine(...)``.

    Entering starts the bus, then each projector (each has opened its read
    model and read its checkpoint when ``__aenter__`` returns); leaving stops
    them (a batch in flight commits first) and then the bus. Enter it inside
    the store's block, and inside the runtime's when process managers send
    commands; leave it before the runtime drains its mailboxes.

    Example::

        balances = account_balances("read-models/")
        async with Runtime([Account], path="events.db") as rt:
            async with ProjectionEngine(rt.store, [balances], runtime=rt):
                outcome = await rt.ask(Address("Account", "42"), Deposit(100))
                await balances.wait_for(outcome.positions[-1])  # read your write
                print(await get_balance(balances, "42"))

    Args:
        store: The open event store.
        projectors: The projectors to run (unique names).
        runtime: What process managers send commands through (anything with
            the :class:`~runtime.CommandSender` shape, e.g. the ``Runtime``).
        bus: An already-open bus to share; by default the engine opens its own.
        **bus_options: ``buffer_size``, ``page_size``, ``poll_interval`` for
            the engine's own bus (see :class:`EventBus`).
    """

    def __init__(
        self,
        store: EventStore,
        projectors: Iterable[Projector] = (),
        *,
        runtime: Any = None,
        bus: EventBus | None = None,
        **bus_options: Any,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self._projectors: dict[str, Projector] = {}
        for projector in projectors:
            if not isinstance(projector, Projector):
                raise ProjectionConfigError(f"not a Projector: {projector!r}")
            if projector.name in self._projectors:
                raise ProjectionConfigError(f"two projectors are named {projector.name!r}")
            self._projectors[projector.name] = projector
        self._own_bus = bus is None
        self.bus = bus if bus is not None else EventBus(store, **bus_options)
        self._stack: AsyncExitStack | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def projectors(self) -> Mapping[str, Projector]:
        """The projectors by name (read-only view)."""
        return MappingProxyType(self._projectors)

    def __getitem__(self, name: str) -> Projector:
        """The projector called ``name``.

        Raises:
            UnknownProjector: there is none.
        """
        try:
            return self._projectors[name]
        except KeyError:
            raise UnknownProjector(f"no projector is named {name!r}") from None

    async def __aenter__(self) -> Self:
        for projector in self._projectors.values():
            projector._validate(self.runtime)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._own_bus:
                await stack.enter_async_context(self.bus)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            for projector in self._projectors.values():
                await task_group.start(projector._run, self.bus, self.runtime)
        except BaseException as exc:
            try:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                # A projector that failed to start (e.g. its read model file
                # cannot be opened) is reported as itself, not as a group of one.
                if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                    raise group.exceptions[0] from None
                raise
            raise
        self._stack, self._task_group = stack, task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, task_group = self._stack, self._task_group
        self._stack = self._task_group = None
        if stack is None or task_group is None:
            return None
        task_group.cancel_scope.cancel()
        return await stack.__aexit__(exc_type, exc, tb)

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - read-your-writes API takes a timeout
        """Wait until every projector reflects ``position`` (see :meth:`Projector.wait_for`)."""
        if self._task_group is None:
            raise ProjectorNotRunning("the projection engine is not running")
        deadline = anyio.current_time() + timeout
        for projector in self._projectors.values():
            await projector.wait_for(position, max(deadline - anyio.current_time(), 0.0))

    async def rebuild(self, name: str, **options: Any) -> RebuildProgress:
        """Rebuild the named SQLite projector's read model and swap it in (see :func:`rebuild`).

        Raises:
            UnknownProjector: no projector has that name.
            ProjectionConfigError: the projector's read model is not a SQLite
                file of its own (reset it to 0 instead).
        """
        from runtime._projection_rebuild import rebuild
        from runtime._projection_sqlite import SQLiteProjector

        projector = self[name]
        if not isinstance(projector, SQLiteProjector):
            raise ProjectionConfigError(
                f"projector {name!r} keeps its read model elsewhere: only SQLite read models "
                "are rebuilt beside the live one; use reset(0) to replay it"
            )
        return await rebuild(projector, **options)

    def statistics(self) -> Mapping[str, ProjectorStatistics]:
        """A snapshot of every projector's statistics, by name."""
        return MappingProxyType({n: p.statistics() for n, p in self._projectors.items()})
