"""The worker end to end on a real Redis/Valkey: triggers in, events and projections out."""

from __future__ import annotations

from redis.asyncio import Redis

from services.keys import result_key, screen_key
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import append_trigger, pending_count, trigger, wait_for_events


async def test_triggers_become_projected_events(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    # Appended before any worker ran: the group starts at id 0, so these are processed too.
    early = [trigger(order_id=f"O-{i}", screen_id=f"s{i % 3}") for i in range(5)]
    early_ids = [await append_trigger(redis, keyspace, e) for e in early]
    await workers.start(make_settings())
    late = [trigger(order_id=f"L-{i}", screen_id="s9") for i in range(20)]
    for entry in late:
        await append_trigger(redis, keyspace, entry)

    events = await wait_for_events(redis, keyspace, 25)
    assert [e.type for e in events] == ["trigger.projected"] * 25
    by_trigger = {e.data["triggerId"]: e for e in events}
    first = by_trigger[early[0].id]
    assert first.data["triggerEntryId"] == early_ids[0]
    assert first.data["documentUrl"] == "/documents/O-0.pdf"
    assert first.data["windowId"]
    assert first.data["deliveries"] == 1
    assert first.data["superseded"] is False
    assert await pending_count(redis, keyspace) == 0

    record = await redis.hgetall(result_key(keyspace, "user-1", early[0].id))
    assert record[b"outcome"] == b"projected"
    assert record[b"eventId"].decode() == first.id
    projection = await redis.hgetall(screen_key(keyspace, "s9"))
    assert projection[b"eventId"].decode() == by_trigger[late[-1].id].id
