"""Delivery may happen twice; effects happen once. Per-screen order follows rd:triggers."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from schemas import codec
from schemas.entries import DisplayAckEntry
from services.keys import screen_key
from services.worker.orders import TemplateResolver
from services.worker.projector import Projector
from streams.consumer import Delivery
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import (
    append_trigger,
    now_ms,
    pending_count,
    read_stream,
    trigger,
    wait_for_events,
    wait_until,
)


async def _deliveries(redis: Redis, keyspace: Keyspace, consumer: str) -> list[Delivery]:
    """Read new entries as `consumer` of the projector group (creating the group)."""
    await redis.xgroup_create(keyspace.triggers, "projector", id="0", mkstream=True)
    reply = await redis.xreadgroup("projector", consumer, {keyspace.triggers: ">"}, count=100)
    return [Delivery(i.decode(), f, 1) for i, f in reply[0][1]]


def _projector(redis: Redis, keyspace: Keyspace) -> Projector:
    return Projector(
        redis=redis,
        keyspace=keyspace,
        resolver=TemplateResolver("/d/{orderId}"),
        group="projector",
        maxlen=10_000,
    )


async def test_two_workers_committing_one_entry_write_one_event(
    redis: Redis, keyspace: Keyspace
) -> None:
    await append_trigger(redis, keyspace, trigger())
    [delivery] = await _deliveries(redis, keyspace, "a-1")
    first, second = _projector(redis, keyspace), _projector(redis, keyspace)
    # Both hold the entry (the second reclaimed it from a slow first); both commit.
    result_a = await first.process([delivery])
    result_b = await second.process([Delivery(delivery.id, delivery.fields, 2)])
    await asyncio.gather(first.commit(result_a.commits, []), second.commit(result_b.commits, []))
    assert sorted([*first.last_statuses, *second.last_statuses]) == ["skipped", "written"]
    events = await read_stream(redis, keyspace.events)
    assert len(events) == 1
    assert await pending_count(redis, keyspace) == 0


async def test_a_trigger_id_appended_twice_is_projected_once(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    entry = trigger()
    await append_trigger(redis, keyspace, entry)
    await append_trigger(redis, keyspace, entry)
    await workers.start(make_settings())
    await wait_until(lambda: _no_pending(redis, keyspace))
    events = await read_stream(redis, keyspace.events)
    assert [e.type for e in events] == ["trigger.projected"]


async def _no_pending(redis: Redis, keyspace: Keyspace) -> bool:
    groups = await redis.xinfo_groups(keyspace.triggers)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


async def test_an_older_trigger_processed_later_is_superseded(
    redis: Redis, keyspace: Keyspace
) -> None:
    older, newer = trigger(order_id="old"), trigger(order_id="new")
    await append_trigger(redis, keyspace, older)
    await append_trigger(redis, keyspace, newer)
    d_old, d_new = await _deliveries(redis, keyspace, "a-1")
    projector = _projector(redis, keyspace)
    # The newer entry is processed first (e.g. the older one was being retried).
    for delivery in (d_new, d_old):
        result = await projector.process([delivery])
        await projector.commit(result.commits, [])

    events = {e.data["orderId"]: e for e in await read_stream(redis, keyspace.events)}
    assert events["new"].data["superseded"] is False
    assert events["old"].data["superseded"] is True
    projection = await redis.hgetall(screen_key(keyspace, "screen-1"))
    assert projection[b"eventId"].decode() == events["new"].id
    assert projection[b"triggerEntryId"].decode() == d_new.id
    assert codec.decode_json(projection[b"data"])["orderId"] == "new"


async def test_each_display_ack_becomes_one_display_acknowledged(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await workers.start(make_settings())
    await append_trigger(redis, keyspace, entry := trigger())
    [projected] = await wait_for_events(redis, keyspace, 1)
    ack = DisplayAckEntry(
        trigger_id=entry.id,
        event_id=projected.id,
        screen_id="screen-1",
        status="shown",
        acked_at=now_ms(),
    )
    ack_id = await redis.xadd(keyspace.triggers, codec.entry_fields(ack))
    events = await wait_for_events(redis, keyspace, 2)
    acknowledged = events[1]
    assert acknowledged.type == "display.acknowledged"
    assert acknowledged.data["eventId"] == projected.id
    assert acknowledged.data["status"] == "shown"
    assert acknowledged.data["displayAckEntryId"] == ack_id.decode()
    projection = await redis.hgetall(screen_key(keyspace, "screen-1"))
    assert projection[b"displayStatus"] == b"shown"
    await asyncio.sleep(0.3)
    assert await redis.xlen(keyspace.events) == 2


async def test_two_workers_share_the_load(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    settings = make_settings()
    one = await workers.start(settings, name="one", batch_size=5)
    two = await workers.start(settings, name="two", batch_size=5)
    entries = [trigger(order_id=f"o-{i}", screen_id=f"s-{i}") for i in range(300)]
    for entry in entries:
        await append_trigger(redis, keyspace, entry)
    events = await wait_for_events(redis, keyspace, 300)
    assert sorted(e.data["triggerId"] for e in events) == sorted(e.id for e in entries)
    assert one.consumer.stats.committed > 0
    assert two.consumer.stats.committed > 0
    assert one.consumer.stats.committed + two.consumer.stats.committed == 300


async def test_a_dead_consumers_entries_are_reclaimed_after_backoff(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    for i in range(3):
        await append_trigger(redis, keyspace, trigger(order_id=f"o-{i}"))
    taken = await _deliveries(redis, keyspace, "crashed-1")  # read, then "crashed"
    assert len(taken) == 3
    await workers.start(make_settings(RETRY_BASE_MS="300"), name="live")
    await asyncio.sleep(0.1)
    assert await redis.xlen(keyspace.events) == 0  # not before the backoff
    events = await wait_for_events(redis, keyspace, 3)
    assert [e.data["deliveries"] for e in events] == [2, 2, 2]
    assert await pending_count(redis, keyspace) == 0


async def test_a_restarted_worker_first_takes_back_its_own_entries(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    for i in range(3):
        await append_trigger(redis, keyspace, trigger(order_id=f"o-{i}"))
    await _deliveries(redis, keyspace, "host-1")  # its previous life read them
    # Backoff far away: only the own-pending pass can explain a quick projection.
    await workers.start(make_settings(RETRY_BASE_MS="60000", RETRY_MAX_MS="60000"), name="host")
    events = await wait_for_events(redis, keyspace, 3, timeout=5)
    assert [e.data["deliveries"] for e in events] == [2, 2, 2]


async def test_dead_consumers_without_pending_entries_are_removed(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await append_trigger(redis, keyspace, trigger())
    await _deliveries(redis, keyspace, "gone-1")  # holds one entry: must be kept
    await redis.xgroup_createconsumer(keyspace.triggers, "projector", "idle-1")
    # Backoff far away: gone-1's entry must stay with it for the whole test.
    settings = make_settings(RETRY_BASE_MS="60000", RETRY_MAX_MS="60000")
    worker = await workers.start(settings, name="live")
    removed = await worker.consumer.remove_dead_consumers()
    assert removed == ["idle-1"]
    consumers = await redis.xinfo_consumers(keyspace.triggers, "projector")
    names = {c["name"].decode() for c in consumers}
    # Redis 7.0 creates a blocked reader's consumer only once it is served; Valkey at once.
    assert names - {worker.consumer.name} == {"gone-1"}
