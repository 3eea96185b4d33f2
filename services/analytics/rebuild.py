"""Screen projections rebuilt from the event log, compared with (and applied to) the live ones.

The worker keeps `rd:screen:{S}` = the `trigger.projected` event with the greatest trigger entry
id for S (an older one processed later is `superseded` and changes nothing), plus the display
status of the last `display.acknowledged` for that event. Replaying `rd:events` in order gives
the same hash, so the live projections can be checked and repaired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from schemas import codec
from schemas.errors import PoisonEntryError
from schemas.events import DisplayAcknowledged, TriggerProjected
from services.keys import LUA_NAMES, ProjectionField, screen_key
from streams.ids import is_newer
from streams.keys import Keyspace
from streams.partitions import Partitions
from streams.replay import pages
from streams.scripts import Script
from streams.values import as_text

logger = logging.getLogger(__name__)

# Replace a live projection only if it is still what the comparison saw (the worker may have
# projected a newer trigger meanwhile): compare-and-set on its triggerEntryId.
APPLY = Script("services.analytics", "apply_projection.lua", **LUA_NAMES)


@dataclass
class Difference:
    screen_id: str
    kind: str  # "missing" (rebuilt, not live) | "extra" (live, no event) | "different"
    fields: dict[str, dict[str, str | None]] = field(default_factory=dict)
    applied: bool = False


@dataclass
class RebuildReport:
    events: int = 0
    screens: int = 0
    differences: list[Difference] = field(default_factory=list)
    undecodable: int = 0
    """Events that did not decode (unknown type or version, broken data): left out."""


@dataclass
class Rebuilt:
    """Every screen's projection as the event log says it should be."""

    projections: dict[str, dict[str, str]]
    events: int
    undecodable: int


async def rebuild(redis: Redis, keyspace: Keyspace) -> Rebuilt:
    """Fold `rd:events` into projections, in memory (nothing is written to the store)."""
    current: dict[str, tuple[str, str, bytes]] = {}  # screen -> (entry id, event id, data)
    acks: dict[str, tuple[str, str, str]] = {}  # event id -> (status, ackedAt, error)
    count = undecodable = 0
    async for page in pages(redis, keyspace.events, page_size=2000):
        for raw_id, fields in page:
            count += 1
            try:
                event = codec.decode_event(fields)
            except PoisonEntryError:
                undecodable += 1
                continue
            event_id = raw_id.decode()
            if isinstance(event, TriggerProjected):
                if event.superseded:
                    continue
                held = current.get(event.screen_id)
                if held is None or is_newer(event.trigger_entry_id, held[0]):
                    # The stored data as written: the live projection holds the same bytes.
                    current[event.screen_id] = (event.trigger_entry_id, event_id, fields[b"data"])
            elif isinstance(event, DisplayAcknowledged):
                acks[event.event_id] = (event.status, str(event.acked_at), event.error or "")
    projections: dict[str, dict[str, str]] = {}
    for screen, (entry_id, event_id, data) in current.items():
        projection = {
            ProjectionField.EVENT_ID: event_id,
            ProjectionField.TRIGGER_ENTRY_ID: entry_id,
            ProjectionField.DATA: data.decode(),
        }
        if event_id in acks:
            status, acked_at, error = acks[event_id]
            projection[ProjectionField.DISPLAY_STATUS] = status
            projection[ProjectionField.DISPLAY_ACKED_AT] = acked_at
            projection[ProjectionField.DISPLAY_ERROR] = error
        projections[screen] = projection
    return Rebuilt(projections, count, undecodable)


async def live_projections(redis: Redis, keyspace: Keyspace) -> dict[str, dict[str, str]]:
    prefix = screen_key(keyspace, "")
    out: dict[str, dict[str, str]] = {}
    async for raw in redis.scan_iter(match=prefix + "*", count=1000):
        key = as_text(raw)
        values = await redis.hgetall(key)
        out[key[len(prefix) :]] = {as_text(k): as_text(v) for k, v in values.items()}
    return out


def compare(
    rebuilt: dict[str, dict[str, str]], live: dict[str, dict[str, str]]
) -> list[Difference]:
    differences = []
    for screen in sorted(set(rebuilt) | set(live)):
        want, have = rebuilt.get(screen), live.get(screen)
        if have is None:
            differences.append(Difference(screen, "missing"))
            continue
        if want is None:
            differences.append(Difference(screen, "extra"))
            continue
        fields = {
            name: {"live": have.get(name), "rebuilt": want.get(name)}
            for name in sorted(set(want) | set(have))
            if _normal(name, want.get(name)) != _normal(name, have.get(name))
        }
        if fields:
            differences.append(Difference(screen, "different", fields))
    return differences


def _normal(name: str, value: str | None) -> Any:
    if name == ProjectionField.DATA and value is not None:
        try:
            return msgspec.json.decode(value)  # compare JSON by value, not by spelling
        except msgspec.DecodeError:
            return value
    if name == ProjectionField.DISPLAY_ERROR and value == "":
        return None
    return value


async def rebuild_and_compare(
    redis: Redis, layout: Partitions | Keyspace, *, apply: bool = False
) -> RebuildReport:
    """Rebuild in memory, compare with the live projections, apply the differences if asked:
    partition by partition (a screen's events and projection live in one)."""
    spaces = layout.spaces if isinstance(layout, Partitions) else (layout,)
    report = RebuildReport(events=0, screens=0, differences=[], undecodable=0)
    for space in spaces:
        part = await _rebuild_partition(redis, space, apply=apply)
        report.events += part.events
        report.screens += part.screens
        report.undecodable += part.undecodable
        report.differences += part.differences
    report.differences.sort(key=lambda difference: difference.screen_id)
    return report


async def _rebuild_partition(redis: Redis, keyspace: Keyspace, *, apply: bool) -> RebuildReport:
    built = await rebuild(redis, keyspace)
    rebuilt = built.projections
    live = await live_projections(redis, keyspace)
    report = RebuildReport(
        events=built.events,
        screens=len(rebuilt),
        differences=compare(rebuilt, live),
        undecodable=built.undecodable,
    )
    if apply:
        for difference in report.differences:
            expected = live.get(difference.screen_id, {}).get(ProjectionField.TRIGGER_ENTRY_ID, "")
            wanted = rebuilt.get(difference.screen_id, {})
            flat = [item for pair in wanted.items() for item in pair]
            done = await APPLY(
                redis, keys=[screen_key(keyspace, difference.screen_id)], args=[expected, *flat]
            )
            difference.applied = bool(done)
            if not done:
                logger.warning(
                    "projection changed while rebuilding; left as it is",
                    extra={"screen_id": difference.screen_id},
                )
    return report
