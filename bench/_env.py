"""Facts about the machine and settings of a run, recorded beside its figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench._context import Context, durability_label

__all__ = ["cpu_model", "describe", "postgres_settings"]

_PACKAGES = ("actorsourcing", "aiosqlite", "orjson", "anyio", "asyncpg", "eventsourcing", "uvloop")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``).

    Machines of one kind differ: the same code ran 1.8x slower on one than on
    another, so a figure is read with the CPU it ran on.

    Returns:
        The name with family and model (x86), the implementer and part codes
        (arm64 Linux, which names no model), or None when nothing says.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name")
    if name is None:
        if "CPU implementer" in fields and "CPU part" in fields:  # arm64 Linux
            codes = f"implementer {fields['CPU implementer']}, part {fields['CPU part']}"
            return f"{platform.machine()} ({codes})"
        return platform.processor() or platform.machine() or None
    # A virtual machine may show only "AMD EPYC": family and model tell the generation.
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def describe(ctx: Context, repeat: int) -> dict[str, Any]:
    """The run's metadata: versions, CPUs, load, date, sizes mode, durability, directory."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": ctx.mode,
        "repeat": repeat,
        "store": ctx.store,
        "sqlite_writer": ctx.sqlite_writer,
        "event_loop": ctx.loop,
        "durability": durability_label(ctx.store),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": [round(x, 2) for x in load] if load else None,
        "directory": str(ctx.workdir),
        "git_commit": _git_commit(Path(__file__).resolve().parent.parent),
        "packages": {name: _version(name) for name in _PACKAGES},
    }


async def postgres_settings(dsn: str) -> dict[str, Any]:
    """Server version and the settings that decide commit durability."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }
    finally:
        await conn.close()
