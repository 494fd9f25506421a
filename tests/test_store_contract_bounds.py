"""Bad input at the edges of what the backends can store, on every backend.

Each case once reached the writer on some backend, where it failed the
driver's binding (a number past 64 bits, a schema version past PostgreSQL's
``integer``, a NUL in a command id that SQLite's JSON lookup cut short) and
with it every other append of the same batch, or killed SQLite's writer
process. Now each is refused in the caller's task, alone, and writes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stores import EventStore, NewEvent, SerializationError
from stores._codec import MAX_INT64, MAX_SCHEMA_VERSION
from tests._store_helpers import assert_unchanged, ev

pytestmark = pytest.mark.anyio


async def _fails_alone(store: EventStore, bad: Any, error: type[Exception]) -> None:
    """``bad`` (an append's arguments) fails with ``error``; a good append beside it commits."""
    stream, events, expected, command_id = bad
    good = store.start_append("Good-1", [ev()], 0)
    with pytest.raises(error):
        await store.append(stream, events, expected, command_id=command_id)
    assert (await good).version == 1
    assert [e.stream for e in await store.read_all()] == ["Good-1"]


@pytest.mark.parametrize(
    "schema_version", [MAX_SCHEMA_VERSION + 1, 2**63], ids=["past-int32", "past-int64"]
)
async def test_schema_version_past_the_bound_fails_alone(
    store: EventStore, schema_version: int
) -> None:
    """A schema version no backend can store raises SerializationError in the caller."""
    bad = NewEvent("Test.Happened", {}, schema_version=schema_version)
    await _fails_alone(store, ("Acc-1", [bad], 0, None), SerializationError)
    await assert_unchanged(store, "Acc-1", 0, 1)


async def test_largest_schema_version_is_stored(store: EventStore) -> None:
    """The bound itself is accepted and read back."""
    await store.append(
        "Acc-1", [NewEvent("Test.Happened", {}, schema_version=MAX_SCHEMA_VERSION)], 0
    )
    assert [e.schema_version for e in await store.read_stream("Acc-1")] == [MAX_SCHEMA_VERSION]


async def test_expected_version_past_64_bits_fails_alone(store: EventStore) -> None:
    """An expected version past 64 bits raises TypeError in the caller (a plain mismatch below)."""
    await _fails_alone(store, ("Acc-1", [ev()], MAX_INT64 + 1, None), TypeError)


@pytest.mark.parametrize("command_id", ["cmd\x00x", "\x00"], ids=["inner-nul", "only-nul"])
async def test_command_id_with_nul_fails_alone(store: EventStore, command_id: str) -> None:
    """A NUL in a command id raises SerializationError on every backend (PostgreSQL's text
    cannot hold it; SQLite's duplicate lookup stopped at it and failed the batch)."""
    await _fails_alone(store, ("Acc-1", [ev()], 0, command_id), SerializationError)
    assert await store.find_command("cmd") is None


async def test_event_id_that_is_not_a_str_fails_alone(store: EventStore) -> None:
    """A non-str event id raises SerializationError in the caller."""
    bad = NewEvent("Test.Happened", {}, event_id=123)  # type: ignore[arg-type]
    await _fails_alone(store, ("Acc-1", [bad], 0, None), SerializationError)


@pytest.mark.parametrize(
    ("version", "schema_version"),
    [(MAX_INT64 + 1, 1), (-1, 1), (1, 0), (1, MAX_SCHEMA_VERSION + 1), (1, "1")],
    ids=["version-past-int64", "negative-version", "schema-0", "schema-past-int32", "schema-str"],
)
async def test_bad_snapshot_arguments_raise_and_save_nothing(
    store: EventStore, version: Any, schema_version: Any
) -> None:
    """save_snapshot refuses versions and schema versions out of range; the old one stays."""
    await store.save_snapshot("Acc-1", 1, {"v": 1})
    with pytest.raises(TypeError):
        await store.save_snapshot("Acc-1", version, {"v": 2}, schema_version)
    snapshot = await store.load_snapshot("Acc-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (1, {"v": 1})


@pytest.mark.parametrize(
    ("name", "position", "error"),
    [
        ("p", MAX_INT64 + 1, TypeError),
        ("p", -1, TypeError),
        ("", 1, TypeError),
        (3, 1, TypeError),
        ("p\x00", 1, SerializationError),
        ("p\ud800", 1, SerializationError),
    ],
    ids=["past-int64", "negative", "empty-name", "int-name", "nul-name", "surrogate-name"],
)
async def test_bad_checkpoints_raise_and_change_nothing(
    store: EventStore, name: Any, position: int, error: type[Exception]
) -> None:
    """set_checkpoint and reset_checkpoint refuse bad names and positions; nothing moves."""
    await store.set_checkpoint("p", 5)
    for call in (store.set_checkpoint, store.reset_checkpoint):
        with pytest.raises(error):
            await call(name, position)
    if not isinstance(name, str) or not name or name != "p":
        with pytest.raises(error):
            await store.get_checkpoint(name)
        with pytest.raises(error):
            async with store.open_consumer_transaction(name):
                pass  # never entered
    assert await store.get_checkpoint("p") == 5
    # Appends go on (SQLite's writer process is still there to take them).
    results = await asyncio.gather(*(store.append(f"Acc-{i}", [ev()], 0) for i in range(5)))
    assert [r.version for r in results] == [1] * 5


async def test_unencodable_reply_writes_nothing(store: EventStore) -> None:
    """A command reply orjson cannot encode is bad input: SerializationError, no events,
    no command recorded (MemoryStore once wrote the events first)."""
    with pytest.raises(SerializationError):
        await store.append("S-1", [ev()], 0, command_id="c-1", reply=object())
    assert await store.head() == 0
    assert await store.stream_version("S-1") == 0
    assert await store.find_command("c-1") is None


async def test_reply_without_a_command_id_is_ignored(store: EventStore) -> None:
    """A reply is stored only with a command id; without one it is not encoded, so even
    a value JSON cannot hold does not fail the append (the same on every backend)."""
    result = await store.append("S-1", [ev()], 0, reply=object())
    assert result.version == 1
