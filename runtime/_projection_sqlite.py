"""The SQLite read-model projector: exactly-once, in a database file of its own."""

from __future__ import annotations

import contextvars
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from structlog.contextvars import bind_contextvars

from runtime._projection_errors import ProjectionConfigError
from runtime._projection_sqlite_file import (
    SQLiteBatchHandler,
    SQLiteFile,
    SQLiteHandler,
    current_generation,
    generation_path,
    open_read_model,
    remove_generation,
    write_generation,
)
from runtime._projection_types import FailurePolicy, ParkedEvent
from runtime._projector import Projector
from runtime._projector_sink import Sink
from runtime._projector_worker import SinkWorker
from stores import EventStore, RecordedEvent

__all__ = ["SQLiteProjector"]

T = TypeVar("T")

CommitHook = Callable[[int], None]
"""``on_commit(position)``: a read-model transaction moved the checkpoint to ``position``."""

_log = structlog.get_logger("runtime.projector")


def _unused(conn: sqlite3.Connection, event: RecordedEvent) -> None:
    raise AssertionError("only the batch handler is used")


class _SQLiteSink(Sink):
    """Drives a :class:`SQLiteFile` from async code, on the read model's own thread.

    Args:
        file: The read model's generation.
        on_commit: See SQLiteProjector's ``on_commit``.
        context: The context variables the handler sees on the thread
            (:meth:`SQLiteProjector._thread_context`).
    """

    pipelines = True

    def __init__(
        self,
        file: SQLiteFile,
        on_commit: CommitHook | None = None,
        *,
        context: contextvars.Context | None = None,
    ) -> None:
        self.file = file
        # Set by the live projector only (a rebuild's copy gets it at the swap):
        # see SQLiteProjector's ``on_commit``.
        self.on_commit = on_commit
        self._worker = SinkWorker(f"read-model {file.path.name}", context)
        # The checkpoint as last committed; touched on the worker thread only.
        self._committed: int | None = None

    def _committed_at(self, position: int) -> None:
        """On the worker thread, after a COMMIT that left the checkpoint at ``position``."""
        # None: a fresh generation opened without reading its checkpoint (0).
        moved = position != self._committed
        self._committed = position
        hook = self.on_commit
        if hook is None or not moved:
            return
        try:
            hook(position)
        except Exception:
            # A broken observer must never stop the read model: the commit stands.
            _log.warning("on_commit hook failed", read_model=self.file.name, exc_info=True)

    def _checkpoint(self) -> int:
        position = self.file.checkpoint()
        self._committed = position
        return position

    def _apply(self, events: Sequence[RecordedEvent], position: int) -> None:
        self.file.apply(events, position)  # raises (rolled back) before the hook
        self._committed_at(position)

    def _save(self, position: int) -> None:
        self.file.save(position)
        self._committed_at(position)

    def _reset(self, position: int) -> None:
        self.file.save(position)
        self._committed = position  # an operator's move, not live progress: no hook

    def _park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        self.file.park(event, error, attempts)
        self._committed_at(event.position)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.call(fn, *args)

    async def checkpoint(self) -> int:
        return await self._call(self._checkpoint)

    async def apply(self, events: Sequence[RecordedEvent], position: int) -> None:
        await self._call(self._apply, events, position)

    def pipeline(
        self,
        events: Sequence[RecordedEvent],
        position: int,
        done: Callable[[bool, Any], None],
        live: bool = False,
    ) -> bool:
        # Only live batches are handed the GIL: they are what the live lag is
        # made of, while catch-up and rebuild pages must not hold writers back.
        self._worker.pipeline(self._apply, (events, position), done, len(events) if live else 0)
        return True

    def rearm(self) -> None:
        self._worker.rearm()

    async def save(self, position: int) -> None:
        await self._call(self._save, position)

    async def reset(self, position: int) -> None:
        await self._call(self._reset, position)

    async def park(self, event: RecordedEvent, error: BaseException, attempts: int) -> None:
        await self._call(self._park, event, error, attempts)

    async def parked(self) -> list[ParkedEvent]:
        return await self._call(self.file.parked)

    async def retry_parked(self, event: RecordedEvent, attempts: int) -> bool:
        return await self._call(self.file.retry_parked, event, attempts)

    async def aclose(self) -> None:
        try:
            await self._call(self.file.close)
        finally:
            self._worker.stop()


class SQLiteProjector(Projector):
    """A projector whose read model is a SQLite database file of its own: exactly once.

    Each batch of events runs through ``handler`` inside ONE SQLite
    transaction that also writes the projector's checkpoint (a table in the
    same file), so after any crash the read model and the checkpoint agree
    and every event's effect is applied exactly once (DESIGN.md guarantee 6).
    The file is separate from the event log, so projector transactions
    never hold the log's write lock and never slow the writer.

    The handler is synchronous and runs in a worker thread: it writes with
    ``conn.execute`` and must not commit, roll back or begin transactions.
    It sees the context variables of the code that started the projector
    (e.g. ``structlog.contextvars`` bound before entering the runtime) and
    ``projector=<name>``, so its structlog lines carry both.

    Args:
        name: The projector's name (also names its files).
        directory: Where the read-model files live (created if missing).
        schema: SQL creating the read model's tables; run once per new file.
        handler: ``handler(conn, event)`` applies one event.
        batch_handler: ``batch_handler(conn, events)`` applies a batch in
            order; faster for read models that can fold a batch first (sums
            per key). Used instead of ``handler`` when given; when a batch
            fails it is tried event by event to find the failing one.
        types: Only events of these type names (None: all).
        categories: Only events of these stream categories (None: all).
        policy: STOP or PARK once an event failed ``max_attempts`` times.
        on_commit: ``on_commit(position)`` is called on the read model's own
            thread right after each live transaction that moved the
            checkpoint has COMMITTED (a batch, pipelined or not, during
            catch-up or live; a checkpoint-only save; a park), with the new
            checkpoint, before the event loop hears of it. Not called for a
            rolled-back batch, for :meth:`reset`, or while :meth:`rebuild`
            writes its copy (the copy's first commit after the swap calls
            it). It must be quick and thread-safe; an exception it raises
            is logged and swallowed and never stops the projector.
        **options: ``max_attempts``, ``retry_backoff``, ``max_backoff``,
            ``batch_size``, ``checkpoint_interval`` (see :class:`Projector`).
    """

    def __init__(
        self,
        name: str,
        directory: Path | str,
        *,
        schema: str,
        handler: SQLiteHandler | None = None,
        batch_handler: SQLiteBatchHandler | None = None,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        policy: FailurePolicy = FailurePolicy.STOP,
        on_commit: CommitHook | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, types=types, categories=categories, policy=policy, **options)
        if not isinstance(schema, str):
            raise ProjectionConfigError("schema must be a str of SQL")
        if handler is None and batch_handler is None:
            raise ProjectionConfigError("give a handler(conn, event) or a batch_handler")
        for fn in (handler, batch_handler):
            if fn is not None and not callable(fn):
                raise ProjectionConfigError(f"handlers must be callable, not {fn!r}")
        if on_commit is not None and not callable(on_commit):
            raise ProjectionConfigError(f"on_commit must be callable, not {on_commit!r}")
        self.directory = Path(directory)
        self.schema = schema
        self.handler = handler
        self.batch_handler = batch_handler
        self.on_commit = on_commit
        self._generation = 0
        self._query_conn: sqlite3.Connection | None = None
        self._query_generation = -1
        self._query_lock: anyio.Lock | None = None

    @property
    def generation(self) -> int:
        """The live generation number (bumped by each rebuild or reset to 0)."""
        return self._generation

    @property
    def path(self) -> Path:
        """The live read model's database file."""
        return generation_path(self.directory, self.name, self._generation)

    def _new_file(self, generation: int, *, synchronous: str = "NORMAL") -> SQLiteFile:
        return SQLiteFile(
            generation_path(self.directory, self.name, generation),
            self.name,
            self.schema,
            self.handler or _unused,
            batch_handler=self.batch_handler,
            synchronous=synchronous,
        )

    def _prepare(self) -> SQLiteFile:
        """Blocking: find (or create) the live generation and open it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        generation = current_generation(self.directory, self.name)
        if generation is None:
            generation = 1
            file = self._new_file(generation)
            remove_generation(file.path)  # a leftover of a crash before the pointer
            file.open()
            write_generation(self.directory, self.name, generation)
        else:
            file = self._new_file(generation)
            file.open()
        # Other generations are leftovers: an interrupted rebuild, or an old
        # file a crash kept us from deleting after a swap.
        for path in self.directory.glob(f"{self.name}.*.sqlite"):
            if path.name.removeprefix(f"{self.name}.").removesuffix(".sqlite") != str(generation):
                remove_generation(path)
        self._generation = generation
        return file

    def _thread_context(self) -> contextvars.Context:
        """The context the handler runs in on the read model's thread.

        A copy of the context of the code that started the projector, so the
        structlog contextvars it bound (a request id, say) reach the
        handler's logs, plus ``projector=<name>``; bound in the copy only, so
        the starter's own logs do not get it.
        """
        context = (self._context or contextvars.copy_context()).copy()
        context.run(bind_contextvars, projector=self.name)
        return context

    async def _open_sink(self, store: EventStore, runtime: Any) -> Sink:
        file = await anyio.to_thread.run_sync(self._prepare)
        return _SQLiteSink(file, self.on_commit, context=self._thread_context())

    async def _reset_sink(self, sink: Sink, position: int) -> Sink:
        if position != 0:
            await sink.reset(position)
            return sink
        # Back to nothing: an empty new generation replaces the live one.
        fresh = self._new_file(self._generation + 1)
        await anyio.to_thread.run_sync(remove_generation, fresh.path)
        await anyio.to_thread.run_sync(fresh.open)
        return await self._swap(sink, _SQLiteSink(fresh, context=self._thread_context()))

    async def _swap(self, sink: Sink, fresh: _SQLiteSink) -> Sink:
        """Make ``fresh`` the live generation (the caller holds the projector's lock)."""
        assert isinstance(sink, _SQLiteSink)
        # The copy becomes the live read model: from now on its commits are
        # live progress (set before its worker runs another live batch).
        fresh.on_commit = self.on_commit
        old = sink.file
        generation = int(fresh.file.path.name.removeprefix(f"{self.name}.").removesuffix(".sqlite"))
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(write_generation, self.directory, self.name, generation)
            self._generation = generation
            await self._drop_query_connection()
            await sink.aclose()  # closes the file on its thread, then ends the thread
            # Readers holding the old file keep reading it: POSIX unlink frees
            # it only once the last open descriptor is closed.
            await anyio.to_thread.run_sync(remove_generation, old.path)
        return fresh

    async def _drop_query_connection(self) -> None:
        if self._query_lock is None:
            self._query_lock = anyio.Lock()
        async with self._query_lock:
            if self._query_conn is not None:
                self._query_conn.close()
                self._query_conn = None

    async def query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection to the live read model.

        ``fn`` runs in a worker thread; queries of one projector run one at a
        time on a shared connection, which follows swaps (rebuilds).

        Raises:
            ProjectionError: the read model has not been created yet.
        """
        if self._query_lock is None:
            self._query_lock = anyio.Lock()
        async with self._query_lock:
            # The running projector knows its generation; a reader without it
            # (another process, or before start) reads the pointer file.
            generation: int | None = self._generation
            if not generation:
                generation = await anyio.to_thread.run_sync(
                    current_generation, self.directory, self.name
                )
            if self._query_conn is None or generation != self._query_generation:
                if self._query_conn is not None:
                    self._query_conn.close()
                self._query_conn = await anyio.to_thread.run_sync(
                    open_read_model, self.directory, self.name
                )
                self._query_generation = generation if generation is not None else -1
            conn = self._query_conn
            return await anyio.to_thread.run_sync(fn, conn)
