"""`streams.consumer.GroupConsumer` on its own: a handler that knows nothing of triggers.

The business (the projector) is tested in tests/services/worker; here the mechanics: the group
at id 0, batches, failures left pending and reclaimed after their backoff, dead letters, a
restarted consumer taking its own pending entries first, pausing, stopping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from streams.consumer import BatchResult, DeadLetter, Delivery, Failure, GroupConsumer
from streams.dead_letter import DeadLetterReason
from streams.keys import Keyspace
from streams.lease import ConsumerLease
from tests.helpers import wait_until

GROUP = "g"


@dataclass
class Recorder:
    """Fails what it is told to, commits the rest (XACK), and remembers everything."""

    redis: Redis
    stream: str
    fail: dict[bytes, int] = field(default_factory=dict)
    """value of field `n` → how many deliveries fail before one succeeds"""
    poison: set[bytes] = field(default_factory=set)
    seen: list[tuple[bytes, int]] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    hold: asyncio.Event | None = None
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared: the handler is paused (as an open circuit pauses the projector)."""
    start_paused: bool = False

    def __post_init__(self) -> None:
        if not self.start_paused:
            self.resumed.set()

    async def process(self, batch: Sequence[Delivery]) -> BatchResult[str]:
        result: BatchResult[str] = BatchResult()
        for delivery in batch:
            n = delivery.fields[b"n"]
            self.seen.append((n, delivery.deliveries))
            if n in self.poison:
                result.failures.append(Failure(delivery, "cannot be read", poison=True))
            elif delivery.deliveries <= self.fail.get(n, 0):
                result.failures.append(Failure(delivery, "not now"))
            else:
                result.commits.append(delivery.id)
        if self.hold is not None:
            await self.hold.wait()
        return result

    async def commit(self, commits: Sequence[str], dead: Sequence[DeadLetter]) -> None:
        ids = [*commits, *(d.delivery.id for d in dead)]
        if ids:
            await self.redis.xack(self.stream, GROUP, *ids)
        self.committed += commits
        self.dead += dead

    def paused(self) -> bool:
        return not self.resumed.is_set()

    async def wait_ready(self) -> None:
        await self.resumed.wait()


class Running:
    def __init__(self, consumer: GroupConsumer[str], task: asyncio.Task[None], stop: asyncio.Event):
        self.consumer, self.task, self.stop = consumer, task, stop

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


Launch = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(redis: Redis, redis_url: str, keyspace: Keyspace) -> AsyncIterator[Launch]:
    running: list[Running] = []
    blocking: list[Redis] = []

    async def launch(handler: Recorder, *, base: str = "c", max_deliveries: int = 3) -> Running:
        client = Redis.from_url(redis_url, socket_timeout=30)
        blocking.append(client)
        consumer: GroupConsumer[str] = GroupConsumer(
            redis=redis,
            blocking_redis=client,
            stream=handler.stream,
            group=GROUP,
            lease=ConsumerLease(redis=redis, keyspace=keyspace, group=GROUP, base=base),
            handler=handler,
            max_deliveries=max_deliveries,
            retry_base_ms=100,
            retry_max_ms=400,
            batch_size=10,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(consumer.ready.wait(), 10)
        one = Running(consumer, task, stop)
        running.append(one)
        return one

    try:
        yield launch
    finally:
        for one in running:
            if not one.task.done():
                await one.halt()
        for client in blocking:
            await client.aclose()


async def _append(redis: Redis, stream: str, *values: str) -> list[str]:
    return [(await redis.xadd(stream, {"n": v})).decode() for v in values]


async def _pending(redis: Redis, stream: str) -> int:
    return int((await redis.xpending(stream, GROUP))["pending"])


async def test_entries_appended_before_any_consumer_are_processed(
    redis: Redis, keyspace: Keyspace, start: Launch
) -> None:
    stream = keyspace.key("s")
    ids = await _append(redis, stream, "1", "2", "3")  # no group yet: it starts at id 0
    handler = Recorder(redis, stream)
    await start(handler)

    async def done() -> bool:
        return len(handler.committed) == 3

    await wait_until(done)
    assert handler.committed == ids
    assert await _pending(redis, stream) == 0


async def test_a_failure_stays_pending_and_is_retried_then_dead_lettered(
    redis: Redis, keyspace: Keyspace, start: Launch
) -> None:
    stream = keyspace.key("s")
    handler = Recorder(redis, stream, fail={b"late": 1, b"never": 99}, poison={b"bad"})
    await start(handler, max_deliveries=3)
    late, never, bad = await _append(redis, stream, "late", "never", "bad")

    async def settled() -> bool:
        return late in handler.committed and len(handler.dead) == 2

    await wait_until(settled, timeout=15)
    deliveries: dict[bytes, list[int]] = {}
    for n, count in handler.seen:
        deliveries.setdefault(n, []).append(count)
    assert deliveries[b"late"] == [1, 2]  # retried once, from the pending list
    assert deliveries[b"never"] == [1, 2, 3]  # the MAX_DELIVERIES-th failure is the last
    assert deliveries[b"bad"] == [1]  # poison: at once
    reasons = {d.delivery.id: (d.reason, d.delivery.deliveries) for d in handler.dead}
    assert reasons == {
        never: (DeadLetterReason.MAX_DELIVERIES, 3),
        bad: (DeadLetterReason.POISON, 1),
    }
    assert await _pending(redis, stream) == 0


async def test_a_restarted_consumer_takes_its_own_pending_entries_first(
    redis: Redis, keyspace: Keyspace, start: Launch
) -> None:
    stream = keyspace.key("s")
    ids = await _append(redis, stream, "1", "2")  # before: the first read takes both
    stuck = Recorder(redis, stream, hold=asyncio.Event())  # reads, then never commits
    first = await start(stuck, base="host")

    async def read() -> bool:
        return len(stuck.seen) == 2

    await wait_until(read)
    name = first.consumer.name
    first.task.cancel()  # a crash: the entries stay pending under its name
    with pytest.raises(asyncio.CancelledError):
        await first.task
    await first.consumer._lease.release()  # the crashed process's lease would expire

    again = Recorder(redis, stream)
    second = await start(again, base="host")
    assert second.consumer.name == name  # the same stable name on the same host
    # `ready` is set after the own pending entries are drained, before any backoff passed.
    assert again.committed == ids
    assert [d for _, d in again.seen] == [2, 2]


async def test_a_paused_handler_takes_no_new_entries(
    redis: Redis, keyspace: Keyspace, start: Launch
) -> None:
    stream = keyspace.key("s")
    handler = Recorder(redis, stream, start_paused=True)
    await start(handler)
    await _append(redis, stream, "1")
    await asyncio.sleep(0.3)  # it would have read the entry within a few ms
    assert handler.seen == []
    handler.resumed.set()

    async def done() -> bool:
        return len(handler.committed) == 1

    await wait_until(done)


async def test_stop_finishes_the_batch_in_hand(
    redis: Redis, keyspace: Keyspace, start: Launch
) -> None:
    stream = keyspace.key("s")
    release = asyncio.Event()
    handler = Recorder(redis, stream, hold=release)
    one = await start(handler)
    await _append(redis, stream, "1")

    async def in_hand() -> bool:
        return len(handler.seen) == 1

    await wait_until(in_hand)
    one.stop.set()
    release.set()
    await asyncio.wait_for(one.task, 10)
    assert len(handler.committed) == 1
    assert await _pending(redis, stream) == 0
