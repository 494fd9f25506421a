"""NewEvent keeps the dataclass behaviour its faster constructor must not change."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from stores import NewEvent


def test_new_event_defaults_and_keywords() -> None:
    """Positional, keyword and default arguments fill the same fields as before."""
    event = NewEvent("A.B", {"n": 1})
    assert (event.type, event.data, event.metadata, event.schema_version, event.event_id) == (
        "A.B",
        {"n": 1},
        None,
        1,
        None,
    )
    full = NewEvent("A.B", {"n": 1}, {"k": "v"}, 3, "id-1")
    assert full == NewEvent(
        type="A.B", data={"n": 1}, metadata={"k": "v"}, schema_version=3, event_id="id-1"
    )
    assert full != event
    assert [f.name for f in dataclasses.fields(NewEvent)] == [
        "type",
        "data",
        "metadata",
        "schema_version",
        "event_id",
    ]


def test_new_event_is_frozen_hashable_and_picklable() -> None:
    """Fields cannot be reassigned; equal events hash alike and survive pickling."""
    event = NewEvent("A.B", 5, None, 2, "id-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = "C.D"  # type: ignore[misc]
    assert hash(event) == hash(NewEvent("A.B", 5, None, 2, "id-2"))
    assert pickle.loads(pickle.dumps(event)) == event
    assert (
        repr(event)
        == "NewEvent(type='A.B', data=5, metadata=None, schema_version=2, event_id='id-2')"
    )
    assert dataclasses.replace(event, schema_version=4).schema_version == 4


def test_new_event_rejects_wrong_arguments() -> None:
    """A missing or unknown argument is a TypeError, as with the generated constructor."""
    with pytest.raises(TypeError):
        NewEvent("A.B")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        NewEvent("A.B", {}, colour="red")  # type: ignore[call-arg]
