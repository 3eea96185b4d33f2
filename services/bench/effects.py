"""Duplicated effects: extra `trigger.projected` events per trigger id in the event streams
(every partition's)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import msgspec
import redis

from services.bench.generator import DuplicateCounter
from streams.partitions import PartitionRecord, Partitions

_PAGE = 5000
_CLOCK_SLACK_MS = 5000


def projected_duplicates(redis_url: str, prefix: str) -> DuplicateCounter:
    """A counter reading `{prefix}:events` from a run's start on (less a clock slack)."""

    def count(trigger_ids: set[str], started_ms: int) -> int:
        client = _client(redis_url)
        seen: Counter[str] = Counter()
        try:
            raw: Any = client.get(Partitions(prefix).record_key)
            tags = msgspec.json.decode(raw, type=PartitionRecord).tags if raw else []
            for space in Partitions(prefix, tags).spaces:
                _count_stream(client, space.events, trigger_ids, started_ms, seen)
        finally:
            client.close()
        return sum(n - 1 for n in seen.values() if n > 1)

    return count


def _client(redis_url: str) -> redis.Redis:
    """A plain client, or the cluster client when `redis_url` names a cluster node."""
    client = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=5)
    info: Any = client.info("cluster")
    if not int(info.get("cluster_enabled", 0)):
        return client
    client.close()
    cluster: Any = redis.RedisCluster.from_url(
        redis_url, socket_timeout=30, socket_connect_timeout=5
    )
    return cast("redis.Redis", cluster)


def _count_stream(
    client: redis.Redis, events: str, trigger_ids: set[str], started_ms: int, seen: Counter[str]
) -> None:
    low = f"{max(started_ms - _CLOCK_SLACK_MS, 0)}-0"
    while True:
        entries: Any = client.xrange(events, min=low, max="+", count=_PAGE)
        for _entry_id, fields in entries:
            if fields.get(b"type") != b"trigger.projected":
                continue
            data = msgspec.json.decode(fields[b"data"])
            trigger_id = data.get("triggerId") if isinstance(data, dict) else None
            if trigger_id in trigger_ids:
                seen[trigger_id] += 1
        if len(entries) < _PAGE:
            break
        last = entries[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else str(last))
