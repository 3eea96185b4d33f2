"""Typed reads of the event log for notebooks: msgspec structs from `schemas/`, by range.

    from redis.asyncio import Redis
    from services.analytics.event_log import read_events

    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    async for entry_id, event in read_events(redis, since="2024-06-01", screen="s1"):
        ...  # event: TriggerProjected | TriggerRejected | TriggerDeadLettered | ...

Bounds and paging are those of `streams.replay` (see docs/analysts.md); `streams.replay.read`
gives plain dicts for any stream instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime

from redis.asyncio import Redis

from schemas.codec import decode_entry, decode_event
from schemas.entries import Entry
from schemas.events import Event
from streams.partitions import read_partitions
from streams.replay import DEFAULT_PAGE_SIZE, read_decoded


async def read_events(
    redis: Redis,
    *,
    prefix: str = "rd",
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    types: Collection[str] | None = None,
    screen: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    skip_undecodable: bool = False,
) -> AsyncIterator[tuple[str, Event]]:
    """`(entry id, event struct)` for the `{prefix}:events` entries in `[since, until)`, of
    every partition (merged by entry id) when the store has several.

    Args:
        redis: a client returning bytes (redis-py's default).
        prefix: the deployment's STREAM_PREFIX.
        since: inclusive start: ISO-8601 time, entry id, `now`, `-2h` (see `parse_bound`).
        until: exclusive end, same forms.
        types: only these event types (`trigger.projected`, ...).
        screen: only events of this screenId.
        skip_undecodable: leave out entries that do not decode instead of raising.

    Raises:
        ReplayRangeError: a bad bound.
        PoisonEntryError: an entry of unknown type or version, or undecodable (unless skipped).
    """
    async for entry_id, event in read_decoded(
        redis,
        [space.events for space in (await read_partitions(redis, prefix, 1)).spaces],
        decode_event,
        since=since,
        until=until,
        types=types,
        page_size=page_size,
        skip_undecodable=skip_undecodable,
    ):
        if screen is None or getattr(event, "screen_id", None) == screen:
            yield entry_id, event


async def read_triggers(
    redis: Redis,
    *,
    prefix: str = "rd",
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    types: Collection[str] | None = None,
    screen: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    skip_undecodable: bool = False,
) -> AsyncIterator[tuple[str, Entry]]:
    """`(entry id, entry struct)` for `{prefix}:triggers`, like `read_events`.

    Raises:
        ReplayRangeError: a bad bound.
        PoisonEntryError / InvalidEntryError: an entry that does not decode (unless skipped).
    """
    async for entry_id, entry in read_decoded(
        redis,
        [space.triggers for space in (await read_partitions(redis, prefix, 1)).spaces],
        decode_entry,
        since=since,
        until=until,
        types=types,
        page_size=page_size,
        skip_undecodable=skip_undecodable,
    ):
        if screen is None or getattr(entry, "screen_id", None) == screen:
            yield entry_id, entry
