"""SQLiteStore across OS processes: SIGKILL crash safety and two writers sharing one file."""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stores import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
CHILD = [sys.executable, "-m", "tests.sqlite_child"]


async def read_line(stream: BufferedByteReceiveStream) -> str:
    """One line of a child's stdout."""
    return (await stream.receive_until(b"\n", 10_000)).decode()


async def stderr_of(process: Process) -> str:
    """Everything a finished child wrote to stderr."""
    assert process.stderr is not None
    chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.anyio
@pytest.mark.slow
async def test_sigkill_mid_load_loses_no_acknowledged_append(tmp_path: Path) -> None:
    """After repeated SIGKILLs every acknowledged append is stored whole, with no gaps."""
    path = tmp_path / "events.db"
    acks: list[list[str]] = []
    for _ in range(3):
        target = len(acks) + 200
        async with await anyio.open_process([*CHILD, "crash", str(path)], cwd=ROOT) as proc:
            assert proc.stdout is not None
            out = BufferedByteReceiveStream(proc.stdout)
            try:
                while len(acks) < target:
                    acks.append((await read_line(out)).split())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pytest.fail(f"child died early: {await stderr_of(proc)}")
            proc.send_signal(signal.SIGKILL)
            # Lines already in the pipe are acknowledged appends too.
            try:
                while True:
                    acks.append((await read_line(out)).split())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass
            assert await proc.wait() == -signal.SIGKILL

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    async with SQLiteStore(path) as store:
        stored = [e async for e in store.iter_all()]
        assert [e.position for e in stored] == list(range(1, len(stored) + 1))
        by_position = {e.position: e for e in stored}
        for tag, stream, version, first, last, command in acks:
            assert tag == "ack"
            events = [by_position[p] for p in range(int(first), int(last) + 1)]
            assert {e.stream for e in events} == {stream}
            assert events[-1].version == int(version)
            record = await store.find_command(command)
            assert record is not None
            assert record.positions == range(int(first), int(last) + 1)
        # No append is partially stored: each has all the events it was made of.
        parts = Counter(e.data["append"] for e in stored)
        sizes = {e.data["append"]: e.data["of"] for e in stored}
        assert parts == sizes
        for stream in {e.stream for e in stored}:
            versions = [e.version for e in await store.read_stream(stream)]
            assert versions == list(range(1, len(versions) + 1))


@pytest.mark.anyio
@pytest.mark.slow
async def test_two_processes_write_each_version_exactly_once(tmp_path: Path) -> None:
    """Two processes appending with expected versions write every version once; losers conflict."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path):
        pass  # create the schema once, before both children start
    streams, appends = 3, 150
    procs: list[Process] = []
    outs: list[BufferedByteReceiveStream] = []
    results: list[list[str]] = []
    try:
        for worker in (1, 2):
            cmd = [*CHILD, "race", str(path), str(worker), str(streams), str(appends)]
            proc = await anyio.open_process(cmd, cwd=ROOT)
            assert proc.stdout is not None
            procs.append(proc)
            outs.append(BufferedByteReceiveStream(proc.stdout))
        for out in outs:
            assert await read_line(out) == "ready"
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.send(b"go\n")
        for proc, out in zip(procs, outs, strict=True):
            try:
                results.append((await read_line(out)).split())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pytest.fail(f"child failed: {await stderr_of(proc)}")
            assert await proc.wait() == 0
            errors = await stderr_of(proc)
            assert "locked" not in errors
            assert errors == ""
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()

    written = sum(int(r[1]) for r in results)
    conflicts = sum(int(r[2]) for r in results)
    # Phase 1 released both on the same version of Race-0: exactly one lost.
    assert written == 2 * appends + 1
    assert conflicts >= 1
    async with SQLiteStore(path) as store:
        assert await store.head() == written
        total = 0
        for s in range(streams):
            events = await store.read_stream(f"Race-{s}")
            assert [e.version for e in events] == list(range(1, len(events) + 1))
            total += len(events)
        assert total == written
        tags = Counter((e.data["w"], e.data.get("i")) for e in await store.read_all(0, 10_000))
        assert all(n == 1 for n in tags.values())
        assert len(tags) == written
