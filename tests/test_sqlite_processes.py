"""SQLiteStore across OS processes: SIGKILL crash safety and two writers sharing one file."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stores import NewEvent, SQLiteStore, StoreClosed, StoreUnavailable

ROOT = Path(__file__).resolve().parent.parent
CHILD = [sys.executable, "-m", "tests.sqlite_child"]


async def read_line(stream: BufferedByteReceiveStream) -> str:
    """One line of a child's stdout."""
    return (await stream.receive_until(b"\n", 10_000)).decode()


async def wait_gone(pid: int, seconds: float = 20.0) -> None:
    """Wait until process ``pid`` has exited (a zombie counts: it runs no more)."""
    with anyio.fail_after(seconds):
        while True:
            try:
                stat = await anyio.Path(f"/proc/{pid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                return
            if stat.split(") ")[-1][0] in "ZX":
                return
            await anyio.sleep(0.02)


async def wait_until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` until it holds (fail after ``seconds``)."""
    with anyio.fail_after(seconds):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def stderr_of(process: Process) -> str:
    """Everything a finished child wrote to stderr."""
    assert process.stderr is not None
    chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_sigkill_mid_load_loses_no_acknowledged_append(tmp_path: Path, writer: str) -> None:
    """After repeated SIGKILLs every acknowledged append is stored whole, with no gaps.

    With ``writer="process"`` the killed process's writer process outlives it
    for a moment: it finishes its batch, finds its input closed, and exits.
    """
    path = tmp_path / "events.db"
    acks: list[list[str]] = []
    writers: list[int] = []
    for _ in range(3):
        target = len(acks) + 200
        command = [*CHILD, "crash", str(path), writer]
        async with await anyio.open_process(command, cwd=ROOT) as proc:
            assert proc.stdout is not None
            out = BufferedByteReceiveStream(proc.stdout)
            if writer == "process":
                tag, pid = (await read_line(out)).split()
                assert tag == "writer"
                writers.append(int(pid))
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
    for pid in writers:
        await wait_gone(pid)

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


@pytest.fixture
def quick_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead writer process is replaced after 0.2 s (then 0.4, 0.8...) instead of 1 s."""
    import stores._sqlite_process_mode as mode

    monkeypatch.setattr(mode, "RESTART_FIRST", 0.2)


@pytest.mark.anyio
async def test_dead_writer_process_is_replaced_and_the_thread_bridges_the_gap(
    tmp_path: Path, quick_restart: None
) -> None:
    """writer="process": once its process is killed, an append sent to it fails with
    StoreUnavailable, the next ones commit on the thread, and a new process takes over."""
    async with SQLiteStore(tmp_path / "events.db", writer="process") as store:
        assert (await store.append("S-1", [NewEvent("T.A", {})], 0)).version == 1
        first = store._process
        assert first is not None
        pid = first.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_gone(pid)
        version = 1
        failed: list[StoreUnavailable] = []
        try:  # it may still go to the dead process (death not yet noticed)
            version = (await store.append("S-1", [NewEvent("T.A", {})], 1)).version
        except StoreUnavailable as exc:
            failed.append(exc)
        assert all("writer process" in str(exc) for exc in failed)
        await wait_until(lambda: not first.usable, 10)
        # The thread takes the batches meanwhile: nothing fails.
        version = (await store.append("S-1", [NewEvent("T.A", {})], version)).version
        await store.save_snapshot("S-1", version, {})
        await wait_until(lambda: store._process is not None and store._process.usable, 30)
        second = store._process
        assert second is not None
        assert second.pid != pid
        before = second.batches
        version = (await store.append("S-1", [NewEvent("T.A", {})], version)).version
        assert second.batches == before + 1  # every batch goes to the new process again
        assert [e.version for e in await store.read_stream("S-1")] == list(range(1, version + 1))
    async with SQLiteStore(tmp_path / "events.db", writer="process") as store:
        assert (await store.append("S-1", [NewEvent("T.A", {})], version)).version == version + 1


@pytest.mark.anyio
async def test_closing_cancels_a_pending_replacement(tmp_path: Path) -> None:
    """A store whose writer process died closes at once, not after the back-off (1 s)."""
    async with SQLiteStore(tmp_path / "events.db", writer="process") as store:
        process = store._process
        assert process is not None
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not process.usable, 10)
        assert store._restart_scope is not None  # a replacement is waiting
        started = anyio.current_time()
    assert anyio.current_time() - started < 0.5
    assert store._process is None


@pytest.mark.anyio
async def test_open_fails_cleanly_when_the_writer_process_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """writer="process" whose child exits at once: open raises, and does not hang."""
    import stores._sqlite_writer_process as writer_process

    monkeypatch.setattr(writer_process, "_CHILD_MAIN", "import sys; sys.exit(3)")
    store = SQLiteStore(tmp_path / "events.db", writer="process")
    with anyio.fail_after(10), pytest.raises(StoreUnavailable, match="writer process"):
        await store.open()
    assert store._process is None
    with pytest.raises(StoreClosed):
        await store.head()


@pytest.mark.anyio
async def test_closing_the_store_ends_its_writer_process(tmp_path: Path) -> None:
    """The writer process exits when its store closes; a bad ``writer`` is refused up front."""
    async with SQLiteStore(tmp_path / "events.db", writer="process") as store:
        assert store._process is not None
        pid = store._process.pid
        assert pid is not None
    await wait_gone(pid, seconds=0.5)  # already reaped by aclose
    with pytest.raises(ValueError, match="writer"):
        SQLiteStore(tmp_path / "events.db", writer="fork")


async def burst(store: SQLiteStore, first: int, count: int) -> None:
    """``count`` concurrent one-event appends to new streams (one large group-commit batch)."""
    async with anyio.create_task_group() as tg:
        for n in range(first, first + count):
            tg.start_soon(store.append, f"B-{n}", [NewEvent("T.A", {})], 0)


@pytest.mark.anyio
async def test_auto_writer_starts_its_process_under_load_and_falls_back_when_it_dies(
    tmp_path: Path, quick_restart: None
) -> None:
    """writer="auto": small batches stay on the thread; large ones start and then use the
    process; when it dies the thread takes everything, until a large batch after the
    back-off starts a new one."""
    async with SQLiteStore(tmp_path / "events.db") as store:  # "auto" is the default
        for n in range(20):
            await store.append(f"S-{n}", [NewEvent("T.A", {})], 0)
        assert store._process is None  # light load: no process
        await burst(store, 0, 300)  # one batch >= LARGE_BATCH: the process starts
        await wait_until(lambda: store._process is not None and store._process.usable, 30)
        process = store._process
        assert process is not None
        await burst(store, 300, 300)
        assert process.batches >= 1  # large batches now go to the process
        before = process.batches
        await store.append("S-0", [NewEvent("T.A", {})], 1)  # a small one stays on the thread
        assert process.batches == before
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Appends sent before the death is noticed: at most the batch the process
        # had fails (outcome unknown); the rest go to the thread.
        failed: list[BaseException] = []

        async def append(n: int) -> None:
            try:
                await store.append(f"B-{n}", [NewEvent("T.A", {})], 0)
            except StoreUnavailable as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(600, 900):
                tg.start_soon(append, n)
        await wait_gone(pid)
        assert not process.usable
        assert len(failed) < 300
        assert all("writer process" in str(exc) for exc in failed)
        await burst(store, 900, 300)  # the thread again: nothing fails
        head = await store.head()
        assert head >= 20 + 1 + 600 + 300
        assert head <= 20 + 1 + 900 + 300
        await anyio.sleep(0.25)  # past the back-off (0.2 s here)
        await burst(store, 1200, 300)  # a large batch: a new process starts
        await wait_until(lambda: store._process is not None and store._process.usable, 30)
        assert store._process is not process
        assert store._process.pid != pid


class _Name(str):
    """A str subclass: marshal cannot serialise it, pickle can."""


def test_pipe_messages_use_marshal_and_fall_back_to_pickle() -> None:
    """Batches go as marshal, subclasses of plain types made plain; anything else as pickle."""
    from decimal import Decimal

    from stores._sqlite_writer_child import dump_message, load_message

    plain = ("batch", [("Acc-1", [("T", b"{}", b"{}", 1, "id")], 0, None, b"null")])
    odd = ("batch", [(_Name("Acc-1"), [], 0, None, b"null")])
    other = ("aux", "SELECT ?", (Decimal("1.5"),))
    assert [dump_message(v)[:1] for v in (plain, odd, other)] == [b"m", b"m", b"p"]
    for value in (plain, odd, other):
        assert load_message(bytearray(dump_message(value))) == value
    assert type(load_message(dump_message(odd))[1][0][0]) is str


@pytest.mark.anyio
async def test_process_writer_takes_a_stream_name_marshal_refuses(tmp_path: Path) -> None:
    """A str-subclass stream name still reaches the writer process (as pickle) and is stored."""
    async with SQLiteStore(tmp_path / "e.db", writer="process") as store:
        result = await store.append(_Name("Acc-1"), [NewEvent("T.A", {"a": 1})], 0)
        assert result.version == 1
        (event,) = await store.read_stream("Acc-1")
        assert event.data == {"a": 1}


class _Opaque:
    """Picklable here, but not importable in the writer process."""


@pytest.mark.anyio
async def test_writer_process_survives_a_request_it_cannot_read(tmp_path: Path) -> None:
    """A request the child cannot unpickle gets an error reply; the child goes on writing."""
    async with SQLiteStore(tmp_path / "e.db", writer="process") as store:
        process = store._process
        assert process is not None
        with pytest.raises(StoreUnavailable, match="cannot read a request"):
            await process.call(("aux", "SELECT ?", (_Opaque(),)))
        assert process.usable
        assert (await store.append("Acc-1", [NewEvent("T.A", {})], 0)).version == 1


@pytest.mark.anyio
async def test_writer_process_survives_a_request_that_raises(tmp_path: Path) -> None:
    """A request that fails with something other than an SQLite error (here an int past
    64 bits) gets an error reply; the child goes on writing (it used to die of it)."""
    async with SQLiteStore(tmp_path / "e.db", writer="process") as store:
        process = store._process
        assert process is not None
        with pytest.raises(StoreUnavailable, match="OverflowError"):
            await process.call(("aux", "SELECT ?", (2**63,)))
        assert process.usable
        assert (await store.append("Acc-1", [NewEvent("T.A", {})], 0)).version == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("durability", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_writer_process_commits_with_the_configured_durability(
    tmp_path: Path, durability: str, level: int
) -> None:
    """The writer process's connection runs at the store's durability (PRAGMA synchronous
    read there): writer="auto" hands it every large batch, so FULL must hold there too."""
    from stores import Durability

    async with SQLiteStore(
        tmp_path / "e.db", writer="process", durability=Durability[durability]
    ) as store:
        await store.append("S-1", [NewEvent("T.A", {})], 0)
        assert store._process is not None
        assert store._process.usable
        assert (await store.pragmas("synchronous"))["synchronous"] == level
