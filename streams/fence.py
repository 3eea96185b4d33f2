"""Replication fences (SPEC 11, `REDIS_WAIT_REPLICAS=k`): before a client is told of a write,
wait until k replicas hold it.

`WAIT` counts only the writes made on its own connection, and a master replicates its writes in
one ordered stream. So a fence is a tiny write to the partition's slot followed by `WAIT` on the
same connection (one pipeline; on a cluster both go to the slot's master): once k replicas
acknowledge the fence, they hold every write the master made before it, whoever made it (the
worker's event, the edge's admission, the CLI's redrive). One fence covers a whole batch.

Across a failover the master that answers a fence may not be the one a caller read from; so
the fence's pipeline first checks that the caller's entry (its witness) is on the answering
master. If it is, the fence covers it; if not, it was lost with the old master.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
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


Witness = tuple[str, str]
"""(stream, entry id): an entry a caller read and is about to tell a client of."""


@dataclass
class _Round:
    """One shared fence: its callers' witnesses, and what it found missing."""

    done: asyncio.Future[set[Witness]]
    witnesses: set[Witness] = field(default_factory=set)


class ReplicaFence:
    """Waits for `replicas` replicas of a partition's master (no-op when `replicas` is 0).

    A fence also checks, on the same connection, that the entries its callers read (their
    witnesses) are on the master that answers it: an entry read from a master that died before
    replicating it is not on the promoted replica, and a fence there must not vouch for it.
    """

    def __init__(self, redis: Redis, *, replicas: int, owner: str) -> None:
        self._redis = redis
        self.replicas = replicas
        self._owner = owner
        self._cluster = is_cluster_client(redis)
        self.fences = 0
        self.shortfalls = 0
        self._next: dict[str, _Round] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    async def once(
        self,
        space: Keyspace,
        witnesses: Sequence[Witness] = (),
        *,
        timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> tuple[int, set[Witness]]:
        """One fence on `space`'s master: how many replicas acknowledged it, and which
        witnesses that master lacks (raises on a store error). Below `replicas`: not yet."""
        key = space.key("fence")
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, entry_id in witnesses:
                pipe.xrange(stream, entry_id, entry_id)
            pipe.set(key, self._owner, px=FENCE_TTL_MS)
            if self._cluster:
                node: Any = self._redis.get_node_from_key(key)  # type: ignore[attr-defined]
                pipe.execute_command("WAIT", self.replicas, timeout_ms, target_nodes=node)
            else:
                pipe.execute_command("WAIT", self.replicas, timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        self.fences += 1
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        found = replies[: len(witnesses)]
        missing = {w for w, entries in zip(witnesses, found, strict=True) if not entries}
        return int(replies[-1]), missing

    async def hold(
        self,
        space: Keyspace,
        witness: Witness | None = None,
        *,
        deadline_s: float | None = None,
    ) -> bool:
        """Return once `replicas` replicas hold every write made so far on `space`'s master;
        retries (a failover, replicas catching up) until `deadline_s`, then `FenceError`.
        False when `witness` is not on that master: lost in a failover, tell no one of it.

        Callers share fences: per partition one is in flight, and every caller that comes
        meanwhile waits for the next one (the one in flight may have been written before
        what that caller read), so a burst of callers costs two fences, not one each, and
        never holds more than one connection in WAIT per partition."""
        if not self.enabled:
            return True
        name = space.prefix
        round_ = self._next.get(name)
        if round_ is None:
            round_ = self._next[name] = _Round(done=asyncio.get_running_loop().create_future())
            if name not in self._running:
                task = asyncio.create_task(self._run(space), name=f"fence {name}")
                self._running[name] = task
        if witness is not None:
            round_.witnesses.add(witness)
        try:
            missing = await asyncio.wait_for(asyncio.shield(round_.done), deadline_s)
        except TimeoutError:
            msg = f"writes on {name} not replicated within {deadline_s} s"
            raise FenceError(msg) from None
        return witness not in missing

    async def _run(self, space: Keyspace) -> None:
        name = space.prefix
        try:
            while (round_ := self._next.pop(name, None)) is not None:
                missing = await self._until_replicated(space, sorted(round_.witnesses))
                if not round_.done.done():
                    round_.done.set_result(missing)
        finally:
            del self._running[name]

    async def _until_replicated(self, space: Keyspace, witnesses: list[Witness]) -> set[Witness]:
        delay = 0.05
        while True:
            try:
                acked, missing = await self.once(space, witnesses)
                if acked >= self.replicas:
                    return missing
                problem = f"{acked} of {self.replicas} replicas acknowledged"
            except STORE_ERRORS as exc:
                problem = repr(exc)
            self.shortfalls += 1
            if self.shortfalls in (1, 10) or self.shortfalls % 100 == 0:
                logger.warning(
                    "waiting for replicas before telling clients",
                    extra={"partition": space.prefix, "problem": problem},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
