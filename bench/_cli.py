"""Command line: ``python -m bench [workload ...] [options]``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio

from bench._context import DEFAULT_DSN, Context
from bench._env import describe, postgres_settings
from bench._measure import WorkloadResult
from bench._progress import make_progress
from bench._report import print_table, write_json
from bench._run import run_all
from bench.workloads import SUITE, WORKLOADS

__all__ = ["main", "parser"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    """The argument parser (also documents every option in ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks for actorsourcing. Without a workload: the quick suite "
        f"({', '.join(SUITE)}) on embedded SQLite at durability FULL.",
        epilog="Workloads: " + "; ".join(f"{w.name}: {w.summary}" for w in WORKLOADS.values()),
    )
    p.add_argument("workloads", nargs="*", metavar="workload", help="run only these")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="larger sizes (minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat (for tests)")
    p.add_argument(
        "--store",
        choices=("sqlite", "memory", "postgres"),
        default="sqlite",
        help="backend for workloads that take one (default: sqlite)",
    )
    p.add_argument(
        "--sqlite-writer",
        choices=("auto", "thread", "process"),
        default="auto",
        help="SQLiteStore(writer=...) for SQLite stores (default: auto, the store's default)",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop to run on: the standard library's (default) or uvloop "
        "(pip install uvloop; in the bench extra)",
    )
    p.add_argument(
        "--dsn",
        default=os.environ.get("ACTORSOURCING_PG_DSN", DEFAULT_DSN),
        help="PostgreSQL DSN (default: $ACTORSOURCING_PG_DSN or %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="runs per workload; median and min-max shown (default 3, smoke 1)",
    )
    p.add_argument(
        "--compare",
        choices=("eventsourcing",),
        action="append",
        default=[],
        help="also run the same workloads on another library, side by side",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also measure the physical floor: fsync rate and plain sqlite3",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write machine-readable results")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.md with PNG plots")
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="parent of the scratch directory (default: the project directory, "
        "so files land on the project's disk); removed afterwards",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@contextmanager
def _library_logs_to_stderr() -> Iterator[None]:
    """Library logs at WARNING and above, on stderr, while the harness runs.

    The harness is an application, so it may configure structlog (libraries
    must not): info lines such as a rebuild's progress would otherwise land in
    the middle of the table on stdout. The previous configuration comes back
    afterwards (the tests call ``main`` in-process).
    """
    import logging

    import structlog

    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        yield
    finally:
        structlog.configure(**previous)


def _select(args: argparse.Namespace, p: argparse.ArgumentParser) -> list[str]:
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    chosen = list(args.workloads) or list(SUITE)
    if args.floor and "floor" not in chosen:
        chosen.insert(0, "floor")
    if "eventsourcing" in args.compare and "eventsourcing" not in chosen:
        chosen.append("eventsourcing")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; return the exit status (1 when a workload failed)."""
    p = parser()
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    chosen = _select(args, p)
    mode = "smoke" if args.smoke else "full" if args.full else "quick"
    repeat = args.repeat or (1 if args.smoke else 3)
    parent = args.dir or PROJECT_ROOT
    if not parent.is_dir():
        p.error(f"--dir {parent} is not a directory")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        p.error("--loop uvloop needs uvloop: pip install uvloop (it is in the bench extra)")
    backend_options = {"use_uvloop": args.loop == "uvloop"}
    workdir = Path(tempfile.mkdtemp(prefix=".bench-", dir=parent))
    try:
        with _library_logs_to_stderr(), make_progress(args.quiet) as progress:
            ctx = Context(
                mode, args.store, args.dsn, workdir, progress, args.sqlite_writer, args.loop
            )
            loop_class: list[str] = []

            async def run() -> list[WorkloadResult]:
                loop = type(asyncio.get_running_loop())
                loop_class.append(f"{loop.__module__}.{loop.__qualname__}")
                return await run_all(ctx, chosen, repeat)

            results = anyio.run(run, backend="asyncio", backend_options=backend_options)
        meta = describe(ctx, repeat)
        meta["event_loop_class"] = loop_class[0]
        if args.store == "postgres":
            try:
                meta["postgres"] = anyio.run(postgres_settings, args.dsn, backend="asyncio")
            except Exception as exc:  # the figures stand; only the metadata is missing
                meta["postgres"] = f"unavailable: {exc}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(
        results,
        title=f"actorsourcing bench ({mode}, {repeat} run(s) each, "
        f"store={args.store}"
        + (f", sqlite_writer={args.sqlite_writer}" if args.sqlite_writer != "auto" else "")
        + (f", loop={args.loop}" if args.loop != "asyncio" else "")
        + (f", {meta['cpu_model']}" if meta.get("cpu_model") else "")
        + f", {meta['date']})",
    )
    for r in results:
        if "store_note" in r.info:
            print(f"note: {r.name} {r.info['store_note']}")
    if args.json:
        write_json(args.json, meta, results)
        print(f"JSON: {args.json}")
    if args.report:
        from bench._plots import write_report

        print(f"Report: {write_report(args.report, meta, results)}")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
