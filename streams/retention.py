"""How much of a stream is still there: its oldest retained entry, and how many were trimmed."""

from __future__ import annotations

from typing import NamedTuple

from redis.asyncio import Redis


class Retention(NamedTuple):
    """What a stream still holds: its oldest entry id and how many entries it ever dropped."""

    oldest: str | None
    removed: int | None
    """Entries trimmed (MAXLEN) or deleted so far; None when the server does not say (< 7.0)."""


async def oldest_id(redis: Redis, stream: str) -> str | None:
    """The id of the stream's oldest retained entry, or None when it is empty or absent."""
    first = await redis.xrange(stream, "-", "+", count=1)
    if not first:
        return None
    entry_id = first[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def retention(redis: Redis, stream: str) -> Retention:
    """The oldest retained id and, on Redis/Valkey ≥ 7, how many entries were dropped."""
    oldest = await oldest_id(redis, stream)
    if oldest is None:
        return Retention(None, None)
    info = await redis.xinfo_stream(stream)
    added, length = info.get("entries-added"), info.get("length")
    if added is None or length is None:
        return Retention(oldest, None)
    return Retention(oldest, max(int(added) - int(length), 0))
