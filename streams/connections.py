"""Redis clients for services: commands on a pool, blocking reads on their own connection; on
a Redis Cluster or Valkey cluster (detected at start, SPEC 11) redis-py's cluster client.

A `RedisCluster` is handed around typed as `Redis`: every command the product sends exists on
both with the same signature, and every multi-key one keeps its keys in one slot (the
partitions' hash tags), which the cluster client checks before sending.
"""

from __future__ import annotations

import asyncio
from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from schemas.errors import StoreUnavailableError

BLOCKING_SOCKET_TIMEOUT_S = 30.0
"""Above the longest XREADGROUP BLOCK (1 s): redis-py's default 5 s would cut long blocks (and
on a cluster, a read timeout also forces a topology refresh)."""
CLUSTER_CONNECTIONS_PER_NODE = 256
"""The cluster client's pool raises at once when it is full (no waiting pool exists for it)."""
DETECT_WAIT_S = 10.0


def redis_client(url: str, *, blocking: bool = False, cluster: bool = False) -> Redis:
    """A client for commands (5 s timeouts) or for blocking reads (its own connection)."""
    timeout = BLOCKING_SOCKET_TIMEOUT_S if blocking else 5.0
    if cluster:
        client = RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=5.0,
            # A blocking reader holds one connection per node it reads from.
            max_connections=4 if blocking else CLUSTER_CONNECTIONS_PER_NODE,
            require_full_coverage=True,
        )
        return cast("Redis", client)
    # A blocking pool waits for a free connection (up to 5 s) under bursts; the default pool
    # fails at once with "Too many connections".
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0 if blocking else 30,
        max_connections=1 if blocking else 64,
        timeout=5,
    )
    return Redis.from_pool(pool)


def is_cluster_client(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def detect_cluster(url: str, *, wait_s: float = DETECT_WAIT_S) -> bool:
    """Whether `url` names a node of a cluster (`INFO cluster`: `cluster_enabled:1`); waits
    up to `wait_s` for a store that is starting."""
    client = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while True:
            try:
                info = await client.info("cluster")
                return bool(int(info.get("cluster_enabled", 0)))
            except (RedisError, OSError) as exc:
                if loop.time() > deadline:
                    msg = f"the store at REDIS_URL did not answer for {wait_s:.0f} s: {exc}"
                    raise StoreUnavailableError(msg) from exc
                await asyncio.sleep(0.2)
    finally:
        await client.aclose()
