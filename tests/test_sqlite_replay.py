"""Activation over SQLiteStore's lean replay read (``read_stream_payloads``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runtime import ActivationFailed, Address, Runtime
from runtime._actor import READ_PAGE
from stores import NewEvent, SQLiteStore
from tests.runtime_child import BUGGY, Dump, Seq

pytestmark = pytest.mark.anyio

SEQ = Address("Seq", "1")


@pytest.fixture
def buggy() -> Iterator[None]:
    """Reset the simulated applier bug after the test."""
    yield
    BUGGY["apply"] = False


async def test_activation_replays_a_stream_longer_than_one_page(tmp_path: Path) -> None:
    """A cold actor folds in every page of a long stream, in version order."""
    count = 2 * READ_PAGE + 7
    async with SQLiteStore(tmp_path / "events.db") as store:
        await store.append("Other-1", [NewEvent("Seq.Appended", {"n": -1})], 0)
        for start in range(0, count, 1000):
            batch = [
                NewEvent("Seq.Appended", {"n": n}) for n in range(start, min(count, start + 1000))
            ]
            await store.append("Seq-1", batch, start)
    async with Runtime(aggregates=[Seq], store=SQLiteStore(tmp_path / "events.db")) as rt:
        reply = (await rt.ask(SEQ, Dump())).value
        assert reply["items"] == list(range(count))


@pytest.mark.usefixtures("buggy")
async def test_failed_replay_logs_the_failing_events_position(tmp_path: Path) -> None:
    """An applier failing in a replay logs the event's global position (looked up on failure)."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        await store.append("Other-1", [NewEvent("Seq.Appended", {"n": 0})] * 3, 0)
        await store.append("Seq-1", [NewEvent("Seq.Appended", {"n": 1})], 0)
    BUGGY["apply"] = True
    async with Runtime(aggregates=[Seq], store=SQLiteStore(tmp_path / "events.db")) as rt:
        with capture_logs() as logs, pytest.raises(ActivationFailed):
            await rt.ask(SEQ, Dump())
        [entry] = [e for e in logs if e["log_level"] == "error"]
        assert (entry["stream"], entry["version"], entry["position"]) == ("Seq-1", 1, 4)
        BUGGY["apply"] = False
        assert (await rt.ask(SEQ, Dump())).value["items"] == [1]
