"""`streams.dead_letter`: the entry format, and the store's list, get, redrive and purge."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from streams.dead_letter import (
    ADDED_FIELDS,
    REDRIVE_FIELD,
    DeadLetterReason,
    DeadLetterStore,
    dead_letter_fields,
)
from streams.keys import Keyspace


def _store(redis: Redis, keyspace: Keyspace) -> DeadLetterStore:
    return DeadLetterStore(
        redis=redis, dead_letter=keyspace.dead_letter, source=keyspace.triggers, maxlen=1000
    )


def test_the_entry_keeps_the_original_fields_and_adds_why() -> None:
    original = {b"type": b"trigger", b"v": b"1", b"data": b"{}", b"traceparent": b"00-a-b-01"}
    fields = dead_letter_fields(
        original,
        source_id="5-0",
        reason=DeadLetterReason.MAX_DELIVERIES,
        error="x" * 5000,
        deliveries=5,
        failed_at=1700,
    )
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    assert {k: v for k, v in pairs.items() if k in original} == original
    assert pairs[b"sourceId"] == b"5-0"
    assert pairs[b"reason"] == b"max_deliveries"
    assert pairs[b"deliveries"] == b"5"
    assert pairs[b"failedAt"] == b"1700"
    assert len(pairs[b"error"]) == 2000  # bounded
    assert set(pairs) == {*original, *(name.encode() for name in ADDED_FIELDS)}


def test_a_redriven_entry_dead_lettered_again_has_one_set_of_bookkeeping() -> None:
    once = {
        b"type": b"trigger",
        b"data": b"{}",
        b"sourceId": b"1-0",
        REDRIVE_FIELD.encode(): b"9-0",
    }
    fields = dead_letter_fields(
        once,
        source_id="2-0",
        reason=DeadLetterReason.POISON,
        error="e",
        deliveries=1,
        failed_at=1,
    )
    names = fields[::2]
    assert names.count(b"sourceId") == 1
    assert REDRIVE_FIELD.encode() not in names


async def test_redrive_appends_once_even_when_raced(redis: Redis, keyspace: Keyspace) -> None:
    store = _store(redis, keyspace)
    fields = dead_letter_fields(
        {b"type": b"trigger", b"v": b"1", b"data": b'{"id":"t"}'},
        source_id="3-0",
        reason=DeadLetterReason.MAX_DELIVERIES,
        error="timed out",
        deliveries=5,
        failed_at=1,
    )
    dead_id = (
        await redis.xadd(keyspace.dead_letter, dict(zip(fields[::2], fields[1::2], strict=True)))
    ).decode()

    results = await asyncio.gather(*(store.redrive(dead_id) for _ in range(5)))

    assert sum(r is not None for r in results) == 1
    [(_, again)] = await redis.xrange(keyspace.triggers)
    assert again == {
        b"type": b"trigger",
        b"v": b"1",
        b"data": b'{"id":"t"}',
        REDRIVE_FIELD.encode(): dead_id.encode(),
    }
    assert await redis.xlen(keyspace.dead_letter) == 0
    assert await store.get(dead_id) is None


async def test_entries_until_and_purge_up_to(redis: Redis, keyspace: Keyspace) -> None:
    store = _store(redis, keyspace)
    ids = [
        (await redis.xadd(keyspace.dead_letter, {"type": "trigger", "n": str(i)})).decode()
        for i in range(5)
    ]
    assert [i async for i, _ in store.entries(page_size=2)] == ids
    assert [i async for i, _ in store.entries(until=ids[2])] == ids[:3]
    assert await store.last_id() == ids[-1]
    later = (await redis.xadd(keyspace.dead_letter, {"type": "trigger", "n": "late"})).decode()
    assert await store.purge(ids[-1]) == 5  # what existed when the operator asked
    assert [i async for i, _ in store.entries()] == [later]
