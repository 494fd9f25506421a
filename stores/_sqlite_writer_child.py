"""The writer process's side of ``_sqlite_writer_process``: a loop over requests.

Started by :class:`~stores._sqlite_writer_process.WriterProcess` as ``python
-c`` with a bare ``stores`` package (so it imports only what it needs); the
protocol is described there. It runs :func:`~stores._sqlite_batch.write_batch`
on its own connection and answers each request in order.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import struct
from pathlib import Path
from typing import Any, cast

import orjson

from stores._errors import ConcurrencyError, DuplicateCommand, StoreError
from stores._sqlite_batch import write_batch
from stores._sqlite_schema import Durability, configure, connect_sync

__all__ = ["HEADER", "serve"]

HEADER = struct.Struct("<Q")
"""Each message on the pipes: its length (8 bytes, little-endian), then its pickle."""


class _Request:
    """An append as :func:`write_batch` sees it (duck-typed AppendRequest)."""

    __slots__ = ("command_id", "events", "expected", "outcome", "reply", "stream")

    def __init__(
        self, stream: str, events: list[Any], expected: int, command_id: str | None, reply: bytes
    ) -> None:
        self.stream = stream
        self.events = events
        self.expected = expected
        self.command_id = command_id
        self.reply = reply
        self.outcome: Any = None


def _result(outcome: Any) -> tuple[Any, ...] | None:
    if outcome is None:
        return None
    if isinstance(outcome, ConcurrencyError):
        return ("c", outcome.expected, outcome.actual)
    if isinstance(outcome, DuplicateCommand):
        rec = outcome.record
        reply = orjson.dumps(rec.reply)
        return (
            "d",
            rec.command_id,
            rec.stream,
            rec.version,
            rec.positions[0],
            rec.positions[-1],
            reply,
        )
    positions = outcome.positions
    return ("r", outcome.version, positions[0], positions[-1])


def serve(read_fd: int, write_fd: int) -> None:
    """The child's loop: one reply per request, until the input pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(read_fd, "rb") as inp, os.fdopen(write_fd, "wb") as out:

        def reply(value: tuple[Any, ...]) -> None:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            out.write(HEADER.pack(len(data)))
            out.write(data)
            out.flush()

        writer = _ChildWriter()
        try:
            while True:
                header = inp.read(HEADER.size)
                if len(header) < HEADER.size:
                    break  # the parent closed the pipe (or died): we are done
                (size,) = HEADER.unpack(header)
                reply(writer.handle(pickle.loads(inp.read(size))))
        except BrokenPipeError:
            pass  # the parent is gone: nobody to answer (the batch was committed or not, whole)
        finally:
            writer.close()


class _ChildWriter:
    """The child's connection and what it does for each request."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.busy_timeout = 5.0

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        kind = request[0]
        try:
            if kind == "init":
                _, path, self.busy_timeout, durability, cache_kib = request
                self.conn = connect_sync(Path(path), self.busy_timeout)
                configure(self.conn, Durability[durability], cache_kib)
                return ("ok", None)
            conn = self.conn
            if conn is None:
                return ("err", "the writer process got a request before init")
            if kind == "batch":
                batch = [_Request(*item) for item in request[1]]
                commit_us = write_batch(conn, cast(Any, batch), self.busy_timeout)
                return ("ok", (commit_us, [_result(r.outcome) for r in batch]))
            if kind == "aux":
                conn.execute(request[1], request[2])
                return ("ok", None)
            if kind == "pragmas":
                return ("ok", {n: conn.execute(f"PRAGMA {n}").fetchone()[0] for n in request[1]})
            return ("err", f"unknown request {kind!r}")
        except StoreError as exc:  # write_batch's StoreUnavailable, already worded
            return ("err", str(exc))
        except sqlite3.Error as exc:
            return ("err", f"SQLite write failed: {exc}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
