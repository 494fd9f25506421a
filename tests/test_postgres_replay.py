"""PostgresStore's lean replay read (``read_stream_payloads``): its read boundary,
what it decodes, and activation over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime import Address, Runtime
from runtime._actor import READ_PAGE
from stores import NewEvent, PostgresStore, StoreClosed, StoreUnavailable
from tests import pg
from tests.pg import admin, terminate_backends
from tests.runtime_child import Dump, Seq

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    """An open PostgresStore in a fresh schema, dropped afterwards."""
    async with pg.opened_store() as store:
        yield store


async def test_payloads_are_read_again_after_backends_are_terminated(
    pg_store: PostgresStore,
) -> None:
    """A payload read on a killed pooled connection retries once on a fresh one."""
    await pg_store.append("Acc-1", [NewEvent("Test.Happened", {"i": i}) for i in range(3)], 0)
    assert await terminate_backends(pg_store.schema) >= 1
    payloads = await pg_store.read_stream_payloads("Acc-1", 2)
    assert payloads == [(2, "Test.Happened", 1, {"i": 1}), (3, "Test.Happened", 1, {"i": 2})]


async def test_payload_read_failing_in_the_server_raises_store_unavailable(
    pg_store: PostgresStore,
) -> None:
    """A server-side error in a payload read becomes StoreUnavailable, the driver's chained."""
    await pg_store.append("Acc-1", [NewEvent("Test.Happened", {})], 0)
    await admin(f'DROP TABLE "{pg_store.schema}".events')
    with pytest.raises(StoreUnavailable) as info:
        await pg_store.read_stream_payloads("Acc-1")
    assert type(info.value.__cause__).__module__.startswith("asyncpg")


async def test_payloads_do_not_decode_metadata(pg_store: PostgresStore) -> None:
    """The replay read leaves metadata alone: undecodable metadata does not stop it."""
    await pg_store.append("Acc-1", [NewEvent("Test.Happened", {"i": 1}, {"who": "me"})], 0)
    await admin(f'UPDATE "{pg_store.schema}".events SET metadata = $1', b"\xff{")
    assert await pg_store.read_stream_payloads("Acc-1") == [(1, "Test.Happened", 1, {"i": 1})]


async def test_payloads_of_a_closed_store_raise_store_closed() -> None:
    """After aclose, read_stream_payloads raises StoreClosed."""
    store = await pg.new_store()
    try:
        async with store:
            await store.append("Acc-1", [NewEvent("Test.Happened", {})], 0)
        with pytest.raises(StoreClosed):
            await store.read_stream_payloads("Acc-1")
    finally:
        await pg.drop_store(store)


async def test_activation_replays_a_stream_longer_than_one_page() -> None:
    """A cold actor on PostgreSQL folds in every page of a long stream, in version order."""
    count = 2 * READ_PAGE + 7
    schema = pg.new_schema()
    try:
        async with await pg.new_store(schema=schema) as store:
            await store.append("Other-1", [NewEvent("Seq.Appended", {"n": -1})], 0)
            for start in range(0, count, 1000):
                batch = [
                    NewEvent("Seq.Appended", {"n": n})
                    for n in range(start, min(count, start + 1000))
                ]
                await store.append("Seq-1", batch, start)
        async with Runtime(aggregates=[Seq], store=await pg.new_store(schema=schema)) as rt:
            reply = (await rt.ask(Address("Seq", "1"), Dump())).value
            assert reply["items"] == list(range(count))
    finally:
        await pg.drop_schema(schema)
