"""What the operator commands share: the store's URL, a Redis client for one command."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from schemas.errors import ConfigError
from services.embedded import running_store_url
from services.redis_clients import redis_client
from services.settings import Settings
from streams.keys import Keyspace


def store_url(settings: Settings, command: str) -> str:
    """REDIS_URL, or else the embedded Valkey of the `serve` running on DATA_DIR.

    Raises:
        ConfigError: neither is there (one line: what to set or start).
    """
    if settings.redis_url is not None:
        return settings.redis_url
    url = running_store_url(settings.data_dir)
    if url is None:
        msg = (
            f"{command} needs REDIS_URL, or an `rdisplay serve` running with DATA_DIR "
            f"`{settings.data_dir}` (none runs there: start one with `make run`, or run this "
            "command where it runs)"
        )
        raise ConfigError(msg)
    return url


@contextlib.asynccontextmanager
async def connected(settings: Settings, command: str) -> AsyncIterator[tuple[Redis, Keyspace]]:
    """A Redis client and the keyspace, closed when the command ends."""
    redis = redis_client(store_url(settings, command))
    try:
        yield redis, Keyspace(settings.stream_prefix)
    finally:
        await redis.aclose()
