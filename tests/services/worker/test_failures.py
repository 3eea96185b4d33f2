"""Order-service failures, retries from the pending list, dead letter and poison entries."""

from __future__ import annotations

import itertools

from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from services.keys import result_key
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import (
    append_trigger,
    pending_count,
    read_stream,
    trigger,
    wait_for_events,
)


async def test_not_found_is_rejected_at_once(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    await workers.start(make_settings(ORDER_API_URL=order_service.url))
    entry = trigger(order_id="missing-42")
    await append_trigger(redis, keyspace, entry)
    [event] = await wait_for_events(redis, keyspace, 1)
    assert event.type == "trigger.rejected"
    assert event.data["code"] == "ORDER_NOT_FOUND"
    assert event.data["deliveries"] == 1
    assert order_service.requests["missing-42"] == 1
    assert await pending_count(redis, keyspace) == 0
    assert await redis.hget(result_key(keyspace, "user-1", entry.id), "outcome") == b"rejected"


async def test_retries_back_off_exponentially_up_to_the_cap(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    base, cap = 400, 1600
    await workers.start(
        make_settings(
            ORDER_API_URL=order_service.url,
            RETRY_BASE_MS=str(base),
            RETRY_MAX_MS=str(cap),
            MAX_DELIVERIES="5",
        )
    )
    order_service.fail_next["flaky"] = 4  # deliveries 1-4 fail, the 5th succeeds
    await append_trigger(redis, keyspace, trigger(order_id="flaky"))
    [event] = await wait_for_events(redis, keyspace, 1, timeout=30)

    assert event.type == "trigger.projected"
    assert event.data["deliveries"] == 5
    assert event.data["documentUrl"] == "/docs/flaky.pdf"
    times = order_service.arrivals["flaky"]
    assert len(times) == 5
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
    backoffs = [400, 800, 1600, 1600]  # base * 2^(n-1), capped at RETRY_MAX_MS
    for gap, backoff in zip(gaps_ms, backoffs, strict=True):
        # Never before the backoff (Redis's idle time decides it). SPEC: the retry starts
        # within RETRY_BASE_MS/2 of the backoff expiring; 250 ms more is what a busy 2-core
        # machine adds to the worker's wake-up, the lookup's request and this fake's clock.
        assert backoff <= gap <= backoff + base / 2 + 250, (gaps_ms, backoffs)


async def test_repeated_failures_end_in_dead_letter(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    await workers.start(make_settings(ORDER_API_URL=order_service.url, MAX_DELIVERIES="3"))
    order_service.fail_next["doomed"] = 100
    entry = trigger(order_id="doomed")
    entry_id = await append_trigger(redis, keyspace, entry)
    [event] = await wait_for_events(redis, keyspace, 1)

    assert event.type == "trigger.dead_lettered"
    assert event.data["code"] == "DEAD_LETTERED"
    assert event.data["deliveries"] == 3
    assert "503" in event.data["message"]
    assert order_service.requests["doomed"] == 3
    [dead] = await read_stream(redis, keyspace.dead_letter)
    assert event.data["deadLetterId"] == dead.id
    assert dead.fields["sourceId"] == entry_id
    assert dead.fields["reason"] == "max_deliveries"
    assert dead.fields["deliveries"] == "3"
    assert "503" in dead.fields["error"]
    assert int(dead.fields["failedAt"]) > 0
    assert dead.type == "trigger"
    assert dead.data["id"] == entry.id  # the original entry's fields are kept
    assert await pending_count(redis, keyspace) == 0
    assert await redis.hget(result_key(keyspace, "user-1", entry.id), "outcome") == (
        b"dead_lettered"
    )


async def test_timeout_is_a_transient_failure(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    order_service.delay_s = 0.3
    await workers.start(
        make_settings(
            ORDER_API_URL=order_service.url, ORDER_API_TIMEOUT_MS="50", MAX_DELIVERIES="2"
        )
    )
    await append_trigger(redis, keyspace, trigger(order_id="slow"))
    [event] = await wait_for_events(redis, keyspace, 1)
    assert event.type == "trigger.dead_lettered"
    assert "timed out" in event.data["message"]


async def test_poison_entries_are_dead_lettered_and_the_worker_goes_on(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await workers.start(make_settings())
    poison = [
        {"type": "trigger", "v": "1", "data": "{not json"},
        {"type": "mystery", "v": "1", "data": "{}"},
        {"type": "trigger", "v": "2", "data": "{}"},
        {"v": "1", "data": "{}"},
        {"type": "display_ack", "v": "1", "data": '{"triggerId": 5}'},
    ]
    poison_ids = [await redis.xadd(keyspace.triggers, p) for p in poison]
    good = trigger(order_id="after-poison")
    await append_trigger(redis, keyspace, good)

    [event] = await wait_for_events(redis, keyspace, 1)
    assert event.type == "trigger.projected"
    assert event.data["triggerId"] == good.id
    dead = await read_stream(redis, keyspace.dead_letter)
    assert sorted(d.fields["sourceId"] for d in dead) == sorted(i.decode() for i in poison_ids)
    assert {d.fields["reason"] for d in dead} == {"poison"}
    assert all(d.fields["deliveries"] == "1" for d in dead)
    assert await pending_count(redis, keyspace) == 0


async def test_invalid_trigger_is_rejected_with_validation_error(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await workers.start(make_settings())
    data = '{"id": "t-1", "userId": "u-1", "screenId": "s-1", "orderId": "", "displayIndex": 0,'
    data += ' "timestamp": 1, "receivedAt": 1, "edgeId": "e"}'
    await redis.xadd(keyspace.triggers, {"type": "trigger", "v": "1", "data": data})
    [event] = await wait_for_events(redis, keyspace, 1)
    assert event.type == "trigger.rejected"
    assert event.data["code"] == "VALIDATION_ERROR"
    assert event.data["triggerId"] == "t-1"
    assert await redis.hget(result_key(keyspace, "u-1", "t-1"), "outcome") == b"rejected"
    assert await read_stream(redis, keyspace.dead_letter) == []


async def test_open_circuit_pauses_the_worker(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    order_service.down = True
    await workers.start(make_settings(ORDER_API_URL=order_service.url, MAX_DELIVERIES="50"))
    for i in range(40):
        await append_trigger(redis, keyspace, trigger(order_id=f"o-{i}"))

    async def opened() -> bool:
        return order_service.total >= 5

    from tests.helpers import wait_until

    await wait_until(opened)
    import asyncio

    await asyncio.sleep(1.0)
    # Five failures open the circuit; while it is open (30 s) no lookups are made, so the
    # 40 entries do not burn their deliveries. One batch may be in flight when it opens.
    assert order_service.total <= 40
    calls = order_service.total
    await asyncio.sleep(0.5)
    assert order_service.total == calls
    assert await redis.xlen(keyspace.dead_letter) == 0
