"""The writer process's side of ``_sqlite_writer_process``: a loop over requests.

Started by :class:`~stores._sqlite_writer_process.WriterProcess` as ``python
-c`` with a bare ``stores`` package (so it imports only what it needs); the
protocol is described there. It runs :func:`~stores._sqlite_batch.write_batch`
on its own connection and answers each request in order.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import sqlite3
import struct
from pathlib import Path
from typing import Any, cast

from stores._errors import StoreError
from stores._sqlite_batch import StreamCache, write_batch
from stores._sqlite_outcomes import error_as_tuple
from stores._sqlite_schema import Durability, configure, connect_sync, read_pragmas

__all__ = ["HEADER", "dump_message", "load_message", "serve"]

HEADER = struct.Struct("<Q")
"""Each message on the pipes: its length (8 bytes, little-endian), then its bytes
(:func:`dump_message`)."""

_MARSHAL, _PICKLE = b"m", b"p"


def dump_message(value: Any) -> bytes:
    """Serialise a request or reply for the pipe: a format byte, then the payload.

    ``marshal`` where it can (batches are tuples, lists, str, bytes, ints and
    None: ~3x faster to dump than pickle, on the event loop's side for every
    batch). Subclasses of those (a str subclass as a stream name, say) are
    first turned into the plain types, which the child can always rebuild
    (it cannot import the module that defines a subclass); anything else
    goes as ``pickle``.
    """
    try:
        return _MARSHAL + marshal.dumps(value)
    except ValueError:
        pass
    plain = _plain(value)
    try:
        return _MARSHAL + marshal.dumps(plain)
    except ValueError:
        return _PICKLE + pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)


def _plain(value: Any) -> Any:
    """``value`` with subclasses of str, bytes, int, float, tuple, list and dict made plain."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple | list):
        items = [_plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def load_message(data: bytes | bytearray) -> Any:
    """The value :func:`dump_message` serialised into ``data``."""
    body = memoryview(data)[1:]
    return marshal.loads(body) if data[0] == _MARSHAL[0] else pickle.loads(body)


def serve(read_fd: int, write_fd: int) -> None:
    """The child's loop: one reply per request, until the input pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(read_fd, "rb") as inp, os.fdopen(write_fd, "wb") as out:

        def reply(value: tuple[Any, ...]) -> None:
            data = dump_message(value)
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
                try:
                    request = load_message(inp.read(size))
                except Exception as exc:  # answer it, never die of one bad request
                    reply(("err", f"the writer process cannot read a request: {exc!r}"))
                    continue
                reply(writer.handle(request))
        except BrokenPipeError:
            pass  # the parent is gone: nobody to answer (the batch was committed or not, whole)
        finally:
            writer.close()


class _ChildWriter:
    """The child's connection and what it does for each request."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.cache = StreamCache()
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
                commit_us, first, results = write_batch(
                    conn, request[1], self.busy_timeout, self.cache
                )
                for i, result in enumerate(results):
                    if type(result) is not int:  # an append's own error, as plain values
                        results[i] = error_as_tuple(cast(StoreError, result))
                return ("ok", (commit_us, first, results))
            if kind == "aux":
                conn.execute(request[1], request[2])
                return ("ok", None)
            if kind == "pragmas":
                return ("ok", read_pragmas(conn, request[1]))
            return ("err", f"unknown request {kind!r}")
        except StoreError as exc:  # write_batch's StoreUnavailable, already worded
            return ("err", str(exc))
        except sqlite3.Error as exc:
            return ("err", f"SQLite write failed: {exc}")
        except Exception as exc:  # never die of one request: the next batch would be lost with us
            return ("err", f"the writer process failed a request: {exc!r}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
