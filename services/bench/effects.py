"""Duplicated effects: extra `trigger.projected` events per trigger id in the event stream."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import redis

from services.bench.generator import DuplicateCounter
from streams.keys import Keyspace

_PAGE = 5000
_CLOCK_SLACK_MS = 5000


def projected_duplicates(redis_url: str, prefix: str) -> DuplicateCounter:
    """A counter reading `{prefix}:events` from a run's start on (less a clock slack)."""
    events = Keyspace(prefix).events

    def count(trigger_ids: set[str], started_ms: int) -> int:
        client = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=5)
        seen: Counter[str] = Counter()
        low = f"{max(started_ms - _CLOCK_SLACK_MS, 0)}-0"
        try:
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
        finally:
            client.close()
        return sum(n - 1 for n in seen.values() if n > 1)

    return count
