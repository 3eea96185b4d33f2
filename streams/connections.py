"""Redis clients for services: commands on a pool, blocking reads on their own connection."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

BLOCKING_SOCKET_TIMEOUT_S = 30.0
"""Above the longest XREADGROUP BLOCK (1 s): redis-py's default 5 s would cut long blocks."""


def redis_client(url: str, *, blocking: bool = False) -> Redis:
    """A client for commands (5 s timeouts) or for blocking reads (its own connection)."""
    # A blocking pool waits for a free connection (up to 5 s) under bursts; the default pool
    # fails at once with "Too many connections".
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=BLOCKING_SOCKET_TIMEOUT_S if blocking else 5.0,
        socket_connect_timeout=5.0,
        health_check_interval=0 if blocking else 30,
        max_connections=1 if blocking else 64,
        timeout=5,
    )
    return Redis.from_pool(pool)
