"""Stateful property test: a store behaves like a pure-Python model of the event log.

Hypothesis drives a synchronous state machine; each rule calls the async store
through an anyio blocking portal (one event loop in a helper thread for the
whole test), so every example gets a fresh store on the same loop.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from stores import (
    ANY,
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    NewEvent,
    RecordedEvent,
    category_of,
)
from tests.conftest import open_backend

T = TypeVar("T")

STREAMS = ["Account-1", "Account-2", "Order-1"]
TYPES = ["Happened", "Changed", "Ended"]
COMMANDS = ["cmd-1", "cmd-2", "cmd-3"]

# The SQLite backend is written in parallel with this test: include it once it imports.
BACKENDS = ["memory"] + (["sqlite"] if importlib.util.find_spec("stores._sqlite") else [])

Row = tuple[int, str, int, str, Any]  # position, stream, version, type, data


def _rows(events: Sequence[RecordedEvent]) -> list[Row]:
    return [(e.position, e.stream, e.version, e.type, e.data) for e in events]


class StoreMachine(RuleBasedStateMachine):
    """Appends and reads against a store and a list-based model, comparing each result."""

    def __init__(self, portal: BlockingPortal, store: EventStore) -> None:
        super().__init__()
        self.portal = portal
        self.store = store
        self.log: list[Row] = []
        self.commands: dict[str, tuple[str, int, list[int]]] = {}
        self.announced: list[Row] = []
        self.counter = itertools.count()
        # A store's background tasks live in a task group entered by open() and
        # left by aclose(), so both must run in one task: the portal's
        # wrapped context manager gives that task.
        self.context = portal.wrap_async_context_manager(store)
        self.context.__enter__()
        store.add_commit_listener(lambda events: self.announced.extend(_rows(events)))

    def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run an async store method on the portal's event loop."""
        return self.portal.call(functools.partial(func, *args, **kwargs))

    def stream_rows(self, stream: str) -> list[Row]:
        return [row for row in self.log if row[1] == stream]

    # -- rules -------------------------------------------------------------------

    @rule(
        stream=st.sampled_from(STREAMS),
        mode=st.sampled_from(["correct", "off", "any"]),
        offset=st.integers(1, 3),
        types=st.lists(st.sampled_from(TYPES), max_size=3),
        command_id=st.none() | st.sampled_from(COMMANDS),
    )
    def append(
        self, stream: str, mode: str, offset: int, types: list[str], command_id: str | None
    ) -> None:
        """Append 0-3 events with a correct, wrong (stale or ahead) or ANY version."""
        current = len(self.stream_rows(stream))
        expected: Any = {
            "correct": current,
            "off": current - offset if current >= offset else current + offset,
            "any": ANY,
        }[mode]
        events = [NewEvent(t, {"n": next(self.counter)}) for t in types]
        conflict = expected is not ANY and expected != current
        duplicate = command_id in self.commands
        error: ConcurrencyError | DuplicateCommand | None = None
        try:
            result = self.call(self.store.append, stream, events, expected, command_id=command_id)
        except (ConcurrencyError, DuplicateCommand) as exc:
            error = exc
        if isinstance(error, ConcurrencyError):
            assert events
            assert conflict
            assert (error.stream, error.expected, error.actual) == (stream, expected, current)
            return
        if isinstance(error, DuplicateCommand):
            # Which error wins when both apply is left to the backend.
            assert events
            assert duplicate
            assert error.command_id == command_id
            return
        if not events:
            assert (result.version, len(result.positions)) == (current, 0)
            return
        assert not conflict
        assert not duplicate
        first = len(self.log) + 1
        assert list(result.positions) == list(range(first, first + len(events)))
        assert result.version == current + len(events)
        for i, event in enumerate(events):
            self.log.append((first + i, stream, current + 1 + i, event.type, event.data))
        if command_id is not None:
            self.commands[command_id] = (stream, result.version, list(result.positions))

    @rule(
        stream=st.sampled_from(STREAMS),
        from_version=st.integers(0, 6),
        to_version=st.none() | st.integers(0, 8),
        backwards=st.booleans(),
        limit=st.none() | st.integers(0, 4),
    )
    def read_stream(
        self,
        stream: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
    ) -> None:
        """read_stream matches the model's slice, order and limit."""
        expected = [
            row
            for row in self.stream_rows(stream)
            if from_version <= row[2] and (to_version is None or row[2] <= to_version)
        ]
        if backwards:
            expected.reverse()
        if limit is not None:
            expected = expected[:limit]
        got = self.call(
            self.store.read_stream,
            stream,
            from_version,
            to_version,
            backwards=backwards,
            limit=limit,
        )
        assert _rows(got) == expected

    @rule(
        after=st.integers(0, 40),
        limit=st.integers(1, 6),
        types=st.none() | st.sets(st.sampled_from(TYPES), min_size=1),
        categories=st.none() | st.sets(st.sampled_from(["Account", "Order"]), min_size=1),
    )
    def read_all(
        self, after: int, limit: int, types: set[str] | None, categories: set[str] | None
    ) -> None:
        """read_all matches the model's filtered page after a position."""
        expected = [
            row
            for row in self.log
            if row[0] > after
            and (types is None or row[3] in types)
            and (categories is None or category_of(row[1]) in categories)
        ][:limit]
        got = self.call(self.store.read_all, after, limit, types=types, categories=categories)
        assert _rows(got) == expected

    @rule(stream=st.sampled_from(STREAMS))
    def stream_version(self, stream: str) -> None:
        """stream_version is the model stream's length."""
        assert self.call(self.store.stream_version, stream) == len(self.stream_rows(stream))

    @rule()
    def head(self) -> None:
        """head is the model log's length."""
        assert self.call(self.store.head) == len(self.log)

    @rule(command_id=st.sampled_from(COMMANDS))
    def find_command(self, command_id: str) -> None:
        """find_command returns what the model recorded for the id, or None."""
        record = self.call(self.store.find_command, command_id)
        if command_id not in self.commands:
            assert record is None
        else:
            assert record is not None
            assert (record.stream, record.version, list(record.positions)) == self.commands[
                command_id
            ]

    @invariant()
    def listeners_saw_the_log(self) -> None:
        """The commit listener has seen exactly the committed log, in order."""
        assert self.announced == self.log

    def teardown(self) -> None:
        self.context.__exit__(None, None, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_matches_model(backend: str, tmp_path: Path) -> None:
    """Random sequences of appends and reads agree with a pure-Python event log model."""
    directories = (tmp_path / f"example-{i}" for i in itertools.count())

    with start_blocking_portal("asyncio") as portal:

        def new_machine() -> StoreMachine:
            path = next(directories)
            path.mkdir()
            return StoreMachine(portal, portal.call(open_backend, backend, path))

        run_state_machine_as_test(
            # Hypothesis documents the argument as any factory returning a machine;
            # its annotation says a class.
            new_machine,  # type: ignore[arg-type]
            settings=settings(
                max_examples=40,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
