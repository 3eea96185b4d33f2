"""Replication fences (SPEC 11, `REDIS_WAIT_REPLICAS=k`): before a client is told of a write,
wait until k replicas hold it.

`WAIT` counts only the writes made on its own connection, and a master replicates its writes in
one ordered stream. So a fence is a tiny write to the partition's slot followed by `WAIT` on the
same connection (one pipeline; on a cluster both go to the slot's master): once k replicas
acknowledge the fence, they hold every write the master made before it, whoever made it (the
worker's event, the edge's admission, the CLI's redrive). One fence covers a whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.connections import is_cluster_client
from streams.keys import Keyspace
from streams.redis_errors import STORE_ERRORS

logger = logging.getLogger(__name__)

FENCE_TTL_MS = 60_000
WAIT_TIMEOUT_MS = 1_000
"""How long one WAIT may block; a fence that falls short is tried again."""


class FenceError(RedisError):
    """Fewer replicas than required acknowledged the writes in time."""


class ReplicaFence:
    """Waits for `replicas` replicas of a partition's master (no-op when `replicas` is 0)."""

    def __init__(self, redis: Redis, *, replicas: int, owner: str) -> None:
        self._redis = redis
        self.replicas = replicas
        self._owner = owner
        self._cluster = is_cluster_client(redis)
        self.fences = 0
        self.shortfalls = 0

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    async def once(self, space: Keyspace, *, timeout_ms: int = WAIT_TIMEOUT_MS) -> int:
        """One fence on `space`'s master: how many replicas acknowledged it (raises on a
        store error). A result below `replicas` means: not yet."""
        key = space.key("fence")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(key, self._owner, px=FENCE_TTL_MS)
            if self._cluster:
                node: Any = self._redis.get_node_from_key(key)  # type: ignore[attr-defined]
                pipe.execute_command("WAIT", self.replicas, timeout_ms, target_nodes=node)
            else:
                pipe.execute_command("WAIT", self.replicas, timeout_ms)
            written, acked = await pipe.execute(raise_on_error=False)
        self.fences += 1
        if isinstance(written, Exception):
            raise written
        if isinstance(acked, Exception):
            raise acked
        return int(acked)

    async def hold(self, space: Keyspace, *, deadline_s: float | None = None) -> None:
        """Return once `replicas` replicas hold every write made so far on `space`'s master;
        retries (a failover, replicas catching up) until `deadline_s`, then `FenceError`."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        end = None if deadline_s is None else loop.time() + deadline_s
        delay = 0.05
        while True:
            try:
                acked = await self.once(space)
                if acked >= self.replicas:
                    return
                problem = f"{acked} of {self.replicas} replicas acknowledged"
            except STORE_ERRORS as exc:
                problem = repr(exc)
            self.shortfalls += 1
            if end is not None and loop.time() > end:
                msg = f"writes on {space.prefix} not replicated in time: {problem}"
                raise FenceError(msg)
            if self.shortfalls in (1, 10) or self.shortfalls % 100 == 0:
                logger.warning(
                    "waiting for replicas before telling clients",
                    extra={"partition": space.prefix, "problem": problem},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
