"""What kind of store REDIS_URL names, found out once at start (SPEC 11: cluster mode is
detected, not configured)."""

from __future__ import annotations

import msgspec

from services.config.settings import Settings
from streams.connections import detect_cluster


async def detect_store(settings: Settings) -> Settings:
    """`settings` with `redis_cluster` set (unchanged when it already is, or without a URL)."""
    if settings.redis_cluster is not None or settings.redis_url is None:
        return settings
    cluster = await detect_cluster(settings.redis_url)
    return msgspec.structs.replace(settings, redis_cluster=cluster)
