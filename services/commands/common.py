"""What the operator commands share: a Redis client for one command, its keyspace."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from schemas.errors import ConfigError
from services.redis_clients import redis_client
from services.settings import Settings
from streams.keys import Keyspace


def require_redis(settings: Settings, command: str) -> str:
    if settings.redis_url is None:
        msg = f"rdisplay {command} needs REDIS_URL (the event store to read)"
        raise ConfigError(msg)
    return settings.redis_url


@contextlib.asynccontextmanager
async def connected(settings: Settings, command: str) -> AsyncIterator[tuple[Redis, Keyspace]]:
    """A Redis client and the keyspace, closed when the command ends."""
    redis = redis_client(require_redis(settings, command))
    try:
        yield redis, Keyspace(settings.stream_prefix)
    finally:
        await redis.aclose()
