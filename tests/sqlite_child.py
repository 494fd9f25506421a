"""Writer processes for the SQLiteStore multi-process and crash tests.

Usage:

``python -m tests.sqlite_child crash PATH [WRITER]``
    Appends forever from 8 concurrent tasks, each to its own streams, 1-4
    events per append, each with a command id; prints ``ack STREAM VERSION
    FIRST LAST COMMAND`` (flushed) after each acknowledged append. The parent
    SIGKILLs it. ``WRITER`` is the store's ``writer=`` (default ``thread``);
    with ``process`` the first line is ``writer PID`` (its writer process).

``python -m tests.sqlite_child race PATH WORKER STREAMS APPENDS``
    Phase 1: reads the version of ``Race-0``, prints ``ready``, waits for a
    line on stdin, then appends with that version (so two processes released
    together conflict: exactly one wins). Phase 2: appends ``APPENDS`` events
    spread over ``Race-0..STREAMS-1`` with read-version-then-append, retrying
    on ConcurrencyError. Prints ``done WRITTEN CONFLICTS``. Any other error
    kills the process with a traceback.
"""

from __future__ import annotations

import itertools
import os
import sys

import anyio

from stores import ConcurrencyError, NewEvent, SQLiteStore

TASKS = 8


async def crash(path: str, writer: str = "thread") -> None:
    """Append until killed, acknowledging each committed append on stdout."""
    async with SQLiteStore(path, writer=writer) as store:
        if writer == "process":
            assert store._process is not None
            print(f"writer {store._process.pid}", flush=True)
        counter = itertools.count()

        async def run(task: int) -> None:
            for round_ in itertools.count():
                stream = f"Crash-{task}-{round_ % 5}"
                n = 1 + (round_ + task) % 4
                append_id = f"{os.getpid()}-{next(counter)}"
                events = [
                    NewEvent("Test.Crashed", {"append": append_id, "of": n, "i": i})
                    for i in range(n)
                ]
                command = f"cmd-{os.getpid()}-{task}-{round_}"
                result = await store.append(
                    stream,
                    events,
                    await store.stream_version(stream),
                    command_id=command,
                )
                positions = result.positions
                print(
                    f"ack {stream} {result.version} {positions[0]} {positions[-1]} {command}",
                    flush=True,
                )

        async with anyio.create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(run, task)


async def race(path: str, worker: int, streams: int, appends: int) -> None:
    """Compete with another process for the same streams with expected versions."""
    conflicts = written = 0
    async with SQLiteStore(path) as store:
        version = await store.stream_version("Race-0")
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        try:
            await store.append("Race-0", [NewEvent("Test.Raced", {"w": worker})], version)
            written += 1
        except ConcurrencyError:
            conflicts += 1
        for i in range(appends):
            stream = f"Race-{i % streams}"
            while True:
                version = await store.stream_version(stream)
                try:
                    await store.append(
                        stream, [NewEvent("Test.Raced", {"w": worker, "i": i})], version
                    )
                except ConcurrencyError:
                    conflicts += 1
                    continue
                written += 1
                break
    print(f"done {written} {conflicts}", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "crash":
        anyio.run(crash, *args)
    else:
        anyio.run(race, args[0], int(args[1]), int(args[2]), int(args[3]))
