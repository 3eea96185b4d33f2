"""The dead-letter stream's entry format: the original fields plus why it failed."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from streams.ids import is_newer
from streams.keys import Keyspace
from streams.replay import pages
from streams.scripts import Script
from streams.values import as_text


class DeadLetterReason(enum.StrEnum):
    POISON = "poison"
    """Unknown type or version, or data that cannot be decoded: no retry can help."""
    MAX_DELIVERIES = "max_deliveries"
    """Processing failed on each of MAX_DELIVERIES deliveries."""


ADDED_FIELDS = ("sourceId", "reason", "error", "deliveries", "failedAt")
REDRIVE_FIELD = "redrivenFrom"
"""Set on an entry put back by `redrive`: the dead-letter id it came from."""
MAX_ERROR_CHARS = 2_000
REDRIVE = Script("streams.lua", "redrive.lua", REDRIVE_FIELD=REDRIVE_FIELD)


def dead_letter_fields(
    original: Mapping[bytes, bytes],
    *,
    source_id: str,
    reason: DeadLetterReason,
    error: str,
    deliveries: int,
    failed_at: int,
) -> list[bytes]:
    """Flat field/value list for the dead-letter entry (original fields first)."""
    out: list[bytes] = []
    for name, value in original.items():
        if name.decode(errors="replace") in (*ADDED_FIELDS, REDRIVE_FIELD):
            continue  # a redriven entry's old bookkeeping is replaced, not repeated
        out += (name, value)
    out += (
        b"sourceId",
        source_id.encode(),
        b"reason",
        reason.value.encode(),
        b"error",
        error[:MAX_ERROR_CHARS].encode(),
        b"deliveries",
        str(deliveries).encode(),
        b"failedAt",
        str(failed_at).encode(),
    )
    return out


class DeadLetterStore:
    """List, show, redrive and purge the dead-letter stream; safe while consumers run."""

    def __init__(self, *, redis: Redis, dead_letter: str, source: str, maxlen: int) -> None:
        self._redis = redis
        self.dead_letter = dead_letter
        self.source = source
        self._maxlen = maxlen

    async def entries(
        self, *, page_size: int = 1000, until: str | None = None
    ) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
        """Every entry in id order; with `until`, those up to and including it."""
        async for page in pages(self._redis, self.dead_letter, page_size=page_size):
            for raw_id, fields in page:
                entry_id = raw_id.decode()
                if until is not None and is_newer(entry_id, until):
                    return
                yield entry_id, fields

    async def get(self, entry_id: str) -> dict[bytes, bytes] | None:
        found: Any = await self._redis.xrange(self.dead_letter, entry_id, entry_id)
        return found[0][1] if found else None

    async def redrive(self, entry_id: str) -> str | None:
        """Re-append the original entry; None when another redrive (or purge) took it."""
        reply = await REDRIVE(
            self._redis,
            keys=[self.dead_letter, self.source],
            args=[entry_id, self._maxlen, *ADDED_FIELDS],
        )
        return as_text(reply) if reply else None

    async def last_id(self) -> str | None:
        last: Any = await self._redis.xrevrange(self.dead_letter, count=1)
        return as_text(last[0][0]) if last else None

    async def purge(self, up_to: str) -> int:
        """Delete every entry up to and including `up_to` (later ones stay)."""
        ms, _, seq = up_to.partition("-")
        minid = f"{ms}-{int(seq or 0) + 1}"
        return int(await self._redis.xtrim(self.dead_letter, minid=minid, approximate=False))


def stores_of(redis: Redis, spaces: Sequence[Keyspace], maxlen: int) -> list[DeadLetterStore]:
    """One store per partition: each partition's dead letter redrives into its own triggers."""
    return [
        DeadLetterStore(
            redis=redis, dead_letter=space.dead_letter, source=space.triggers, maxlen=maxlen
        )
        for space in spaces
    ]


async def locate(
    stores: Sequence[DeadLetterStore], entry_id: str, partition: int | None = None
) -> list[tuple[int, DeadLetterStore, dict[bytes, bytes]]]:
    """Where a dead-letter id is: (partition, store, fields) of each partition holding it
    (ids are per stream, so two partitions may hold the same one), or of `partition` only."""
    chosen = [partition] if partition is not None else range(len(stores))
    found = []
    for index in chosen:
        fields = await stores[index].get(entry_id)
        if fields is not None:
            found.append((index, stores[index], fields))
    return found


def describe(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A dead-letter entry for people and machines: bookkeeping first, data decoded."""
    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    out: dict[str, Any] = {"id": entry_id}
    for name in ADDED_FIELDS:
        if name in text:
            value: Any = text[name]
            if name in ("deliveries", "failedAt") and value.isdigit():
                value = int(value)
            out[name] = value
    out["type"] = text.get("type")
    out["v"] = int(text["v"]) if text.get("v", "").isdigit() else text.get("v")
    raw = text.get("data")
    try:
        out["data"] = msgspec.json.decode(raw) if raw is not None else None
    except msgspec.DecodeError as exc:
        # Poison: as `rdisplay replay` writes it, so a reader of either sees the same keys.
        out["data"] = None
        out["decodeError"] = str(exc)
        out["rawData"] = raw
    if raw is None:
        out["decodeError"] = "entry has no data field"
    for name, value in text.items():
        if name not in out and name not in ("data",):
            out[name] = value
    return out
