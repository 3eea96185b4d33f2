"""Stable, readable consumer names with one live holder each.

A consumer is named `{base}-{slot}` (base: the host name by default) and holds the lease key
for that name while it runs. A worker that restarts on the same host takes the lowest free
slot again, so it finds its own pending entries under the same name; the janitor removes
consumers that have no lease and no pending entries.
"""

from __future__ import annotations

import logging
import secrets

from redis.asyncio import Redis

from schemas.errors import RemoteDisplayError
from streams.keys import Keyspace
from streams.scripts import Script

logger = logging.getLogger(__name__)

RENEW = Script("streams.lua", "lease_renew.lua")
RELEASE = Script("streams.lua", "lease_release.lua")

MAX_SLOTS = 1024


class LeaseError(RemoteDisplayError, RuntimeError):
    """Every consumer name of a base is held: more than MAX_SLOTS consumers on one host."""


class ConsumerLease:
    """Holds the name of one consumer of one group."""

    def __init__(
        self, *, redis: Redis, keyspace: Keyspace, group: str, base: str, ttl_ms: int = 15_000
    ) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._group = group
        self._base = base
        self.ttl_ms = ttl_ms
        self._token = secrets.token_hex(8)
        self.name = ""

    def key_for(self, name: str) -> str:
        return self._keyspace.key("consumer", self._group, name)

    async def acquire(self) -> str:
        for slot in range(1, MAX_SLOTS + 1):
            name = f"{self._base}-{slot}"
            if await self._redis.set(self.key_for(name), self._token, nx=True, px=self.ttl_ms):
                self.name = name
                return name
        msg = f"no free consumer name for base {self._base!r} in group {self._group!r}"
        raise LeaseError(msg)

    async def renew(self) -> bool:
        ok = await RENEW(
            self._redis, keys=[self.key_for(self.name)], args=[self._token, self.ttl_ms]
        )
        if not ok:
            logger.warning("consumer lease held by another process", extra={"consumer": self.name})
        return bool(ok)

    async def release(self) -> None:
        if self.name:
            await RELEASE(self._redis, keys=[self.key_for(self.name)], args=[self._token])
