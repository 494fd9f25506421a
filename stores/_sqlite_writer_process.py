"""The SQLite group-commit writer in a process of its own (``SQLiteStore(writer=...)``).

Why a process: the store's writer thread needs the GIL back after every
``sqlite3`` call and for its own Python work (deciding versions and positions,
binding a batch's parameters). While the event loop is busy resuming the
previous batch's callers, CPython hands the GIL over only when the loop
blocks or after the 5 ms switch interval, so the thread and the loop take
turns instead of overlapping (measured: a 500-append batch took 8-11 ms of
wall time for ~4.7 ms of CPU; the process used one core's worth of CPU). A
child process has its own interpreter and GIL: the same :func:`write_batch`
runs there, in parallel with the event loop (the README's benchmarks give the
figures). It costs a pipe round trip and serialising per batch, which is why
``writer="auto"`` (the default) sends it only batches of 16 appends or more
(``LARGE_BATCH``: concurrent load) and starts it only when the first one comes; the
thread keeps small batches and their latency. Only one batch is in flight at
a time, so the two connections do not contend.

The protocol, on two pipes of their own (the child's stdout and stderr stay
the parent's, for diagnostics): length-prefixed messages (a format byte,
then marshal or, for what marshal cannot take, pickle), one reply per
request, in order.

- ``("init", path, busy_timeout, durability_name, cache_kib)`` -> ``("ok", None)``
- ``("batch", [(stream, events, expected, command_id, reply), ...])`` ->
  ``("ok", (commit_us | None, first_position, [result, ...]))``, write_batch's
  answer, with one result per append: its stream's new version (an int:
  committed), ``("c", expected, actual)`` (conflict) or ``("d", command_id,
  stream, version, first, last, reply)`` (duplicate); or ``("err", message)``:
  nothing of it committed.
- ``("aux", sql, params)`` -> ``("ok", None)`` or ``("err", message)``
- ``("pragmas", names)`` -> ``("ok", {name: value})``

The child exits when its input pipe closes (the parent closed the store, or
died: a batch being written is finished first, so an append is never half
stored). It ignores SIGINT (a Ctrl-C reaches the whole process group): the
parent decides when to stop. If the child dies, the appends of the batch it
was writing fail with ``StoreUnavailable`` (committed or not: their outcome
is unknown to this process, as after a lost database connection); then the
store's writer thread takes every batch until a replacement process is up
(``_sqlite_process_mode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stores._errors import StoreUnavailable
from stores._sqlite_batch import BatchItem, BatchOutcome
from stores._sqlite_writer_child import HEADER as _HEADER
from stores._sqlite_writer_child import dump_message, load_message

__all__ = ["WriterProcess"]

_READ_CHUNK = 1 << 20
# Replies are read into one buffer allocated once: ``os.read(fd, 1 MiB)`` would
# allocate 1 MiB per call, which glibc serves from a fresh mmap (over its mmap
# threshold), shrinks with mremap and returns with munmap: three system calls
# per batch, on the event loop, seen with strace at 1,000 callers.

BatchDone = Callable[["BatchOutcome | Exception"], None]


class WriterProcess:
    """The parent's side: spawns the child, sends it work, hands results to the loop.

    Replies are read with ``loop.add_reader`` (no thread, so no GIL hand-off
    per batch) and requests written without blocking the loop
    (``loop.add_writer`` for whatever the pipe does not take at once).
    """

    def __init__(self, on_gone: Callable[[str], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_gone = on_gone  # called once if the child dies (not on aclose)
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1
        self._out = bytearray()
        self._writing = False
        self._in = bytearray()
        self._chunk = memoryview(bytearray(_READ_CHUNK))
        # One entry per request sent: what to do with its reply, in order.
        self._waiting: deque[Callable[[tuple[Any, ...] | None], None]] = deque()
        self._dead: str | None = None
        self._ready = False
        self.batches = 0  # batches sent to the child

    async def start(self, path: Path, busy_timeout: float, durability: str, cache_kib: int) -> None:
        """Spawn the child and wait until its connection is configured.

        Raises:
            StoreUnavailable: the child could not start or open the database.
        """
        import anyio.to_thread  # here: the child imports this module without anyio

        # fork + exec on a worker thread: it takes milliseconds, not nothing.
        to_child_w, from_child_r = await anyio.to_thread.run_sync(self._spawn)
        self._to_child = to_child_w
        self._from_child = from_child_r
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        self._loop.add_reader(from_child_r, self._readable)
        await self.call(("init", str(path), busy_timeout, durability, cache_kib))
        self._ready = True

    def _spawn(self) -> tuple[int, int]:
        """Start the child on two new pipes; return the parent's ends (write, read)."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _CHILD_MAIN,
                    _PACKAGE_DIR,
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            os.close(to_child_w)
            os.close(from_child_r)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return to_child_w, from_child_r

    # -- requests -------------------------------------------------------------

    def run_batch(self, items: list[BatchItem], done: BatchDone) -> None:
        """Send a batch; ``done(outcome)`` runs on the loop with the child's answer.

        ``outcome`` is :func:`~stores._sqlite_batch.write_batch`'s answer, or
        the StoreUnavailable that failed the whole batch.
        """
        if self._dead is not None:
            done(StoreUnavailable(self._dead))
            return
        self.batches += 1

        def settle(reply: tuple[Any, ...] | None) -> None:
            if reply is None:
                assert self._dead is not None
                done(StoreUnavailable(f"{self._dead}; the outcome of these appends is unknown"))
            elif reply[0] == "err":
                done(StoreUnavailable(reply[1]))
            else:
                done(reply[1])

        self._send(("batch", items), settle)

    async def call(self, request: tuple[Any, ...]) -> Any:
        """Send one request and return its reply's value.

        Raises:
            StoreUnavailable: the child reported an error, or is gone.
        """
        future: asyncio.Future[Any] = self._loop.create_future()

        def settle(reply: tuple[Any, ...] | None) -> None:
            if future.done():
                return
            if reply is None:
                future.set_exception(StoreUnavailable(self._dead or "the writer process exited"))
            elif reply[0] == "err":
                future.set_exception(StoreUnavailable(reply[1]))
            else:
                future.set_result(reply[1])

        if self._dead is not None:
            raise StoreUnavailable(self._dead)
        self._send(request, settle)
        # Shielded by the caller where it matters: the child runs it regardless.
        return await future

    def _send(
        self, request: tuple[Any, ...], settle: Callable[[tuple[Any, ...] | None], None]
    ) -> None:
        data = dump_message(request)
        self._waiting.append(settle)
        self._out += _HEADER.pack(len(data))
        self._out += data
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        try:
            written = os.write(self._to_child, self._out)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the child is gone (broken pipe): fail what waits for it
            self._out.clear()
            self._stop_writing()
            self._gone(f"the writer process cannot be written to: {exc}")
            return
        del self._out[:written]
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._to_child, self._flush)
        elif not self._out:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._to_child)

    # -- replies --------------------------------------------------------------

    def _readable(self) -> None:
        try:
            size = os.readv(self._from_child, [self._chunk])
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(f"the writer process cannot be read from: {exc}")
            return
        if not size:
            self._gone(self._exit_text())
            return
        buf = self._in
        buf += self._chunk[:size]
        offset = 0
        replies = []
        while len(buf) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, offset)
            end = offset + _HEADER.size + size
            if len(buf) < end:
                break
            replies.append(load_message(buf[offset + _HEADER.size : end]))
            offset = end
        # Consumed before any reply is handled: a handler that raises (or sends
        # the next request) must not see these bytes again.
        del buf[:offset]
        for reply in replies:
            if self._dead is not None:
                break  # a handler found the child gone: everything waiting was failed
            self._waiting.popleft()(reply)

    def _exit_text(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return f"the writer process exited (code {code})"

    def _gone(self, why: str) -> None:
        """The child is gone: fail what waits for it, and everything sent later."""
        first = self._dead is None
        if first:
            self._dead = why
            self._loop.remove_reader(self._from_child)
            if self._on_gone is not None:
                # Before failing the batch in flight: its completion starts the
                # next batch, which must already go elsewhere (writer="auto").
                self._on_gone(why)
        while self._waiting:
            self._waiting.popleft()(None)

    # -- lifecycle ------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Started, initialised and not gone."""
        return self._ready and self._dead is None

    @property
    def started(self) -> bool:
        """It came up (initialised its connection), whether or not it is gone since."""
        return self._ready

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._proc.pid if self._proc is not None else None

    async def aclose(self, deadline: float) -> None:
        """Close the child's input (it finishes what it has, then exits) and reap it."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if self._dead is None:
            self._loop.remove_reader(self._from_child)
        self._stop_writing()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dead = self._dead or "the store is closed"
        while self._waiting:
            self._waiting.popleft()(None)
        try:
            await asyncio.wait_for(self._loop.run_in_executor(None, proc.wait), deadline)
        except TimeoutError:
            proc.kill()
            await self._loop.run_in_executor(None, proc.wait)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)
# The child's entry point. It registers a bare ``stores`` package instead of
# importing ``stores/__init__.py``: the child needs only the batch code, and
# the full package (aiosqlite, anyio, structlog, which may pull in rich) costs
# ~0.2 s of start-up, paid on every store open.
_CHILD_MAIN = """
import sys, types
package = types.ModuleType("stores")
package.__path__ = [sys.argv[1]]
sys.modules["stores"] = package
from stores._sqlite_writer_child import serve
serve(int(sys.argv[2]), int(sys.argv[3]))
"""
