"""A writer process for the PostgreSQL global-order test.

Usage: ``python -m tests.pg_child SCHEMA WRITER_ID EVENTS [SLOW_BATCHES]``

Opens a PostgresStore on SCHEMA and appends EVENTS events from 10 concurrent
tasks, each to its own stream (``W{id}-{task}``) with checked versions and
1-3 events per append. With SLOW_BATCHES > 0 the first SLOW_BATCHES batches
sleep 0.3 s after writing (holding their positions and the write lock) before
COMMIT: a deliberately slow, long-open writing transaction. Prints
``ok <events>`` when done.
"""

from __future__ import annotations

import sys

import anyio

from stores import NewEvent, PostgresStore
from tests.pg import DSN

TASKS = 10


async def main(schema: str, writer: int, total: int, slow_batches: int) -> None:
    """Append ``total`` events to this writer's streams, concurrently."""
    async with PostgresStore(DSN, schema=schema, pool_max_size=2) as store:
        slow = {"left": slow_batches}

        async def hold_open() -> None:
            if slow["left"] > 0:
                slow["left"] -= 1
                await anyio.sleep(0.3)

        store._writer.before_commit = hold_open  # type: ignore[union-attr]  # test hook
        per_task = [total // TASKS + (1 if t < total % TASKS else 0) for t in range(TASKS)]

        async def run(task: int, count: int) -> None:
            stream, version, written = f"W{writer}-{task}", 0, 0
            while written < count:
                n = min(1 + (written + task) % 3, count - written)
                events = [
                    NewEvent("Test.Written", {"writer": writer, "task": task, "i": written + i})
                    for i in range(n)
                ]
                result = await store.append(stream, events, version)
                version, written = result.version, written + n

        async with anyio.create_task_group() as tg:
            for task, count in enumerate(per_task):
                tg.start_soon(run, task, count)
    print(f"ok {total}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    anyio.run(main, args[0], int(args[1]), int(args[2]), int(args[3]) if len(args) > 3 else 0)
