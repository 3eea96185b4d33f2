"""Rolling upgrades: a worker reads entries of a newer v1 edge (SPEC 6, schema evolution)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from schemas import codec
from schemas.entries import DisplayAckEntry
from services.keys import screen_key
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import now_ms, pending_count, read_stream, trigger, wait_for_events


async def _append_newer(
    redis: Redis, keyspace: Keyspace, fields: dict[str, bytes], *, data: dict[str, object]
) -> str:
    """Append `fields` with extra `data` fields and extra entry fields, as a newer edge would."""
    raw = codec.decode_json(fields["data"]) | data
    newer = {**fields, "data": msgspec.json.encode(raw), "origin": b"edge-v2", "priority": b"7"}
    entry_id = await redis.xadd(keyspace.triggers, newer)
    return entry_id.decode()


async def test_entries_with_fields_of_a_newer_writer_are_projected_once(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    entries = [trigger(order_id=f"N-{i}", screen_id=f"s{i % 2}") for i in range(6)]
    entry_ids = [
        await _append_newer(
            redis,
            keyspace,
            codec.entry_fields(entry),
            data={"priority": i, "scanner": {"model": "X1", "firmware": [2, 1]}},
        )
        for i, entry in enumerate(entries)
    ]
    await workers.start(make_settings())

    events = await wait_for_events(redis, keyspace, len(entries))
    assert [e.type for e in events] == ["trigger.projected"] * len(entries)
    assert sorted(e.data["triggerId"] for e in events) == sorted(e.id for e in entries)
    assert {e.data["triggerEntryId"] for e in events} == set(entry_ids)
    assert all(e.data["deliveries"] == 1 for e in events)

    # Now a newer screen acks the last display of s1, with a field of its own.
    last = next(e for e in reversed(events) if e.data["screenId"] == "s1")
    ack = DisplayAckEntry(
        trigger_id=last.data["triggerId"],
        event_id=last.id,
        screen_id="s1",
        status="shown",
        acked_at=now_ms(),
    )
    await _append_newer(redis, keyspace, codec.entry_fields(ack), data={"renderMs": 41})

    events = await wait_for_events(redis, keyspace, len(entries) + 1)
    acknowledged = [e for e in events if e.type == "display.acknowledged"]
    assert len(acknowledged) == 1
    assert acknowledged[0].data["eventId"] == last.id
    assert acknowledged[0].data["status"] == "shown"
    assert await pending_count(redis, keyspace) == 0
    assert await read_stream(redis, keyspace.dead_letter) == []
    projection = await redis.hgetall(screen_key(keyspace, "s1"))
    assert projection[b"eventId"].decode() == last.id
    assert projection[b"displayStatus"] == b"shown"
    # Exactly once: nothing more arrives (no reclaim re-processes them as failures).
    assert len(await read_stream(redis, keyspace.events)) == len(entries) + 1
