"""What every workload gets: sizes for the mode, a scratch directory, stores, progress."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._measure import NotAvailable, RunOutput
from bench._progress import Progress

__all__ = ["DEFAULT_DSN", "MODES", "Context", "Workload", "durability_label", "new_store"]

MODES = ("smoke", "quick", "full")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Context:
    """Settings shared by the workloads of one harness run.

    Attributes:
        mode: ``"smoke"`` (tiny, for tests), ``"quick"`` (default) or ``"full"``.
        store: Backend for workloads that take one: sqlite, memory or postgres.
        dsn: PostgreSQL DSN (used with ``store == "postgres"``).
        workdir: Scratch directory on the disk under test; removed by the CLI.
        progress: Where long steps report progress.
        sqlite_writer: ``SQLiteStore(writer=...)`` for every SQLite store:
            ``"auto"`` (the store's default), ``"thread"`` or ``"process"``.
        loop: The asyncio event loop the harness runs on: ``"asyncio"`` (the
            standard library's) or ``"uvloop"``.
    """

    mode: str
    store: str
    dsn: str
    workdir: Path
    progress: Progress
    sqlite_writer: str = "auto"
    loop: str = "asyncio"

    def sizes(self, table: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The sizes of the current mode from a ``{mode: sizes}`` table."""
        return dict(table[self.mode])

    def fresh_dir(self, tag: str) -> Path:
        """A new empty directory under the scratch directory."""
        path = self.workdir / f"{tag}-{next(_counter)}"
        path.mkdir(parents=True)
        return path

    def discard(self, path: Path) -> None:
        """Remove a directory made by :meth:`fresh_dir` (keeps the disk from filling)."""
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Workload:
    """A registered workload.

    Attributes:
        name: CLI name (``python -m bench <name>``).
        summary: One line for the listing and the report.
        run: Does ONE run in the given context (the harness repeats it).
        sizes: ``{mode: sizes}`` for smoke, quick and full (JSON-encodable).
        stores: The backends it runs on; when ``--store`` picks another one,
            the first listed is used (and the report says so).
    """

    name: str
    summary: str
    run: Callable[[Context], Awaitable[RunOutput]]
    sizes: Mapping[str, Mapping[str, Any]]
    stores: tuple[str, ...] = ("sqlite", "memory", "postgres")


def durability_label(store: str) -> str:
    """How the backend makes a commit durable, in words (for JSON and reports)."""
    return {
        "sqlite": "FULL (WAL, synchronous=FULL: fsync per commit)",
        "memory": "none (in-process memory)",
        "postgres": "server settings (see info.synchronous_commit)",
    }[store]


@asynccontextmanager
async def new_store(
    ctx: Context, tag: str, *, kind: str | None = None, gc_untouched: bool = False
) -> AsyncIterator[tuple[Any, Path | None]]:
    """Build an *unopened* store of the chosen backend; drop its data afterwards.

    Yields ``(store, sqlite_file)``; the file is ``None`` for other backends.
    ``gc_untouched``: a SQLite or PostgreSQL store built with
    ``gc_threshold=None`` (it leaves Python's GC settings alone).

    SQLite gets a file in a fresh directory at durability FULL; PostgreSQL a
    throwaway schema dropped on exit. Raises :class:`NotAvailable` when the
    backend has not landed (``stores`` lacks the class).
    """
    kind = kind or ctx.store
    directory: Path | None = None
    schema: str | None = None
    store: Any
    gc: dict[str, Any] = {"gc_threshold": None} if gc_untouched else {}
    try:
        import stores

        if kind == "memory":
            store = stores.MemoryStore()
        elif kind == "sqlite":
            directory = ctx.fresh_dir(tag)
            store = stores.SQLiteStore(
                directory / "events.db",
                durability=stores.Durability.FULL,
                writer=ctx.sqlite_writer,
                **gc,
            )
        elif kind == "postgres":
            schema = f"bench_{os.getpid()}_{next(_counter)}_{tag}".replace("-", "_")
            store = stores.PostgresStore(ctx.dsn, schema=schema, **gc)
        else:
            raise NotAvailable(f"unknown store {kind!r}")
    except (ImportError, AttributeError) as exc:
        if directory is not None:
            ctx.discard(directory)
        raise NotAvailable(f"stores: {kind} backend not available yet ({exc})") from exc
    try:
        yield store, (directory / "events.db" if directory is not None else None)
    finally:
        if directory is not None:
            ctx.discard(directory)
        if schema is not None:
            await _drop_schema(ctx.dsn, schema)


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
