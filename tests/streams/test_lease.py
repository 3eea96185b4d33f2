"""`streams.lease.ConsumerLease`: stable consumer names, one live holder each."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from streams.keys import Keyspace
from streams.lease import MAX_SLOTS, ConsumerLease, LeaseError


def _lease(redis: Redis, keyspace: Keyspace, ttl_ms: int = 15_000) -> ConsumerLease:
    return ConsumerLease(redis=redis, keyspace=keyspace, group="g", base="host", ttl_ms=ttl_ms)


async def test_each_holder_takes_the_lowest_free_slot(redis: Redis, keyspace: Keyspace) -> None:
    first, second, third = (_lease(redis, keyspace) for _ in range(3))
    assert [await first.acquire(), await second.acquire()] == ["host-1", "host-2"]
    await first.release()
    assert await third.acquire() == "host-1"  # a restart on this host gets its name back


async def test_renew_keeps_the_lease_and_refuses_another_holders(
    redis: Redis, keyspace: Keyspace
) -> None:
    mine = _lease(redis, keyspace, ttl_ms=60_000)
    await mine.acquire()
    assert await mine.renew() is True
    assert 0 < await redis.pttl(mine.key_for("host-1")) <= 60_000
    # Another process took the name (this one's lease had expired): renewing fails.
    await redis.set(mine.key_for("host-1"), "someone-else", px=60_000)
    assert await mine.renew() is False
    await mine.release()  # releases only its own
    assert await redis.get(mine.key_for("host-1")) == b"someone-else"


async def test_an_expired_lease_is_taken_back_by_its_holder(
    redis: Redis, keyspace: Keyspace
) -> None:
    mine = _lease(redis, keyspace)
    await mine.acquire()
    await redis.delete(mine.key_for("host-1"))  # expired
    assert await mine.renew() is True
    assert await redis.exists(mine.key_for("host-1"))


async def test_every_slot_taken_is_a_lease_error(redis: Redis, keyspace: Keyspace) -> None:
    holder = _lease(redis, keyspace)
    async with redis.pipeline(transaction=False) as pipe:
        for slot in range(1, MAX_SLOTS + 1):
            pipe.set(holder.key_for(f"host-{slot}"), "taken", px=60_000)
        await pipe.execute()
    with pytest.raises(LeaseError, match="no free consumer name"):
        await holder.acquire()
