"""Who is alive (issue 16): edges, workers and screens, as heartbeats with expiry in the store.

Each live process writes its members into a sorted set every `BEAT_S`, scored by when they
expire (`now + TTL_MS`); a reader counts only members whose score is still ahead of now. A
process that dies stops beating, and its members are offline `TTL_MS` later at the latest
(3 missed beats): no flag that a crash leaves set. Only the services write here, for their own
processes and for screens connected to them with a valid token; no request refreshes it.

Keys (outside every partition, one key per command, so the same on a cluster):
`{prefix}:presence:edges` (member `["<edgeId>"]`), `…:workers` (`["<workerId>"]`),
`…:screens` (`["<screenId>", "<edgeId>"]`: a screen is online while any edge holds it), and
the hash `…:screens-seen` (screenId → the last beat that saw it, ms), which keeps every screen
ever seen, so an offline one is still known (`rd_screen_last_seen_timestamp_seconds`), and per
edge or worker `…:info:<id>` (JSON: when it started, a worker's circuits), written with each
beat with the same expiry, so a crashed process's info goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from streams.keys import Keyspace
from streams.redis_errors import STORE_ERRORS
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)

BEAT_S = 5.0
MISSED_BEATS = 3
TTL_MS = int(BEAT_S * MISSED_BEATS * 1000)
"""A member not renewed for this long is offline: within 15 s of its process dying."""

KINDS = ("edges", "workers", "screens")

_json = msgspec.json.Encoder()
_members = msgspec.json.Decoder(list[str])
_info = msgspec.json.Decoder(dict[str, Any])


def presence_key(root: Keyspace, kind: str) -> str:
    return root.key("presence", kind)


def info_key(root: Keyspace, name: str) -> str:
    return root.key("presence", "info", name)


def seen_key(root: Keyspace) -> str:
    return root.key("presence", "screens-seen")


async def screens_seen(redis: Redis, root: Keyspace) -> dict[str, int]:
    """Every screen ever seen, with the last beat that saw it (ms)."""
    raw = await redis.hgetall(seen_key(root))
    return {as_text(key): int(value) for key, value in raw.items()}


def member(*parts: str) -> str:
    return _json.encode(list(parts)).decode()


class Heartbeat:
    """Beats `members()` of each kind every `BEAT_S` until stopped; removes them at the end."""

    def __init__(
        self,
        redis: Redis,
        root: Keyspace,
        members: Callable[[], dict[str, Iterable[str]]],
        *,
        seen: Callable[[], Iterable[str]] | None = None,
        info: Callable[[], dict[str, dict[str, object]]] | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = redis
        self._root = root
        self._members = members
        self._seen = seen
        self._info = info
        self._clock_ms = clock_ms
        self.beats = 0

    async def beat(self) -> None:
        """One beat now: every member of every kind renewed, the expired ones swept."""
        now = self._clock_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, members in self._members().items():
                key = presence_key(self._root, kind)
                scores = dict.fromkeys(members, now + TTL_MS)
                if scores:
                    pipe.zadd(key, scores)
                pipe.zremrangebyscore(key, "-inf", now)
            screens = dict.fromkeys(self._seen(), now) if self._seen is not None else {}
            if screens:
                pipe.hset(seen_key(self._root), mapping=screens)  # type: ignore[arg-type]
            about = self._info() if self._info is not None else {}
            for name, value in about.items():
                pipe.set(info_key(self._root, name), _json.encode(value), px=TTL_MS)
            await pipe.execute()
        self.beats += 1

    async def add(self, kind: str, one: str, *, seen: str | None = None) -> None:
        """A member that arrived between beats: online at once (and a screen `seen` now,
        so one that leaves before the next beat is still known)."""
        now = self._clock_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(presence_key(self._root, kind), {one: now + TTL_MS})
            if seen is not None:
                pipe.hset(seen_key(self._root), seen, now)
            await pipe.execute()

    async def remove(self, kind: str, members: Sequence[str], *, seen: str | None = None) -> None:
        if not members and seen is None:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            if members:
                pipe.zrem(presence_key(self._root, kind), *members)
            if seen is not None:  # a screen that leaves was seen until now
                pipe.hset(seen_key(self._root), seen, self._clock_ms())
            await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until `stop` is set (or the task is cancelled), then leave: a clean stop is
        offline at once, a crash within `TTL_MS`."""
        try:
            while not stop.is_set():
                try:
                    await self.beat()
                except STORE_ERRORS as exc:  # the next beat tries again
                    logger.warning("presence heartbeat failed", extra={"error": repr(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), BEAT_S)
        finally:
            with contextlib.suppress(*STORE_ERRORS):
                for kind, members in self._members().items():
                    await asyncio.wait_for(self.remove(kind, list(members)), 1.0)
                for name in self._info() if self._info is not None else ():
                    await asyncio.wait_for(self._redis.delete(info_key(self._root, name)), 1.0)


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """What is alive now: each member with the time (ms) it expires unless renewed."""

    edges: dict[str, int]
    workers: dict[str, int]
    screens: dict[str, dict[str, int]]
    """screenId → {edgeId holding it: expiry}."""
    info: dict[str, dict[str, Any]] = {}
    """edgeId or workerId (alive ones only) → what it says of itself (`startedAt`, ...)."""


async def read_presence(
    redis: Redis, root: Keyspace, *, now: int | None = None, with_info: bool = False
) -> Presence:
    """The members whose expiry is still ahead of `now`."""
    at = now_ms() if now is None else now
    found: dict[str, list[tuple[list[str], int]]] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for kind in KINDS:
            pipe.zrangebyscore(presence_key(root, kind), f"({at}", "+inf", withscores=True)
        replies = await pipe.execute()
    for kind, reply in zip(KINDS, replies, strict=True):
        found[kind] = [(_members.decode(raw), int(score)) for raw, score in reply]
    screens: dict[str, dict[str, int]] = {}
    for parts, expires in found["screens"]:
        if len(parts) == 2:
            screens.setdefault(parts[0], {})[parts[1]] = expires
    edges = {parts[0]: expires for parts, expires in found["edges"] if parts}
    workers = {parts[0]: expires for parts, expires in found["workers"] if parts}
    info: dict[str, dict[str, Any]] = {}
    names = [*edges, *workers] if with_info else []
    if names:
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(info_key(root, name))
            raw_infos = await pipe.execute()
        for name, raw_value in zip(names, raw_infos, strict=True):
            if raw_value is not None:
                with contextlib.suppress(msgspec.DecodeError):
                    info[name] = _info.decode(raw_value)
    return Presence(edges=edges, workers=workers, screens=screens, info=info)
