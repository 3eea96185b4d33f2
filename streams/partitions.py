"""Partitioned streams (SPEC 11): which keys make up partition p, and which partition a key of
the business (a screen) belongs to.

With one partition the key names are exactly SPEC 6's (`rd:triggers`, `rd:screen:S`, ...).
With N > 1 partition p's keys carry one hash tag, `rd:{<tag>}:triggers`, `rd:{<tag>}:screen:S`,
so every atomic step on a partition touches one cluster slot. The tags are chosen so that
their slots sit in the middle of N equal slot ranges: a cluster whose masters hold equal
contiguous ranges (what `CLUSTER ADDSLOTSRANGE` and `--cluster create` make) gets the
partitions spread evenly, which plain numeric tags do not (Centrifugo issue #554).

The string key `{prefix}:partitions` records the layout a store was started with, JSON
`{"count": N, "tags": [...]}`; a process started with another N is refused.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from schemas.errors import ConfigError
from streams.keys import Keyspace

MAX_PARTITIONS = 1024
"""Each partition holds at least 16 slots of 16384."""


class PartitionRecord(msgspec.Struct, frozen=True):
    """The JSON of `{prefix}:partitions`."""

    count: int
    tags: list[str]


@functools.lru_cache(maxsize=64)
def spread_tags(count: int) -> tuple[str, ...]:
    """Hash tags for `count` partitions, slot of tag i in the middle of the i-th slot range."""
    if not 1 <= count <= MAX_PARTITIONS:
        msg = f"STREAM_PARTITIONS must be between 1 and {MAX_PARTITIONS}, not {count}"
        raise ConfigError(msg)
    if count == 1:
        return ()
    tags: list[str] = []
    for index in range(count):
        low = index * REDIS_CLUSTER_HASH_SLOTS // count
        high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        middle, tolerance = (low + high) // 2, (high - low) // 4
        attempt = 0
        while abs(key_slot(f"p{index}.{attempt}".encode()) - middle) > tolerance:
            attempt += 1
        tags.append(f"p{index}.{attempt}")
    return tuple(tags)


def partition_index(screen_id: str, count: int) -> int:
    """The partition of a screen: a stable hash of its id (CRC-32, the same in any language)."""
    if count == 1:
        return 0
    return zlib.crc32(screen_id.encode()) % count


class Partitions:
    """The partitions of one deployment: `root` names the keys outside every partition
    (tokens, pairing, rate limits, the record), `spaces[p]` those of partition p."""

    __slots__ = ("count", "root", "spaces", "tags")

    def __init__(self, prefix: str, tags: Sequence[str] = ()) -> None:
        self.root = Keyspace(prefix)
        self.tags = tuple(tags)
        if len(self.tags) == 1:
            msg = "one partition has no hash tag (its keys are SPEC 6's)"
            raise ConfigError(msg)
        self.spaces: tuple[Keyspace, ...] = tuple(
            Keyspace(f"{prefix}:{{{tag}}}") for tag in self.tags
        ) or (self.root,)
        self.count = len(self.spaces)

    @classmethod
    def of(cls, prefix: str, count: int) -> Partitions:
        return cls(prefix, spread_tags(count))

    @property
    def prefix(self) -> str:
        return self.root.prefix

    @property
    def record_key(self) -> str:
        return self.root.key("partitions")

    def index_for(self, screen_id: str) -> int:
        return partition_index(screen_id, self.count)

    def for_screen(self, screen_id: str) -> Keyspace:
        """The keyspace of the partition that holds this screen's triggers and projection."""
        return self.spaces[partition_index(screen_id, self.count)]

    def index_of_stream(self, stream: str) -> int:
        for index, space in enumerate(self.spaces):
            if stream in (space.triggers, space.events, space.dead_letter):
                return index
        msg = f"{stream!r} is no stream of these partitions"
        raise ValueError(msg)

    def record(self) -> bytes:
        return msgspec.json.encode(PartitionRecord(count=self.count, tags=list(self.tags)))


_decode_record = msgspec.json.Decoder(PartitionRecord)


async def read_record(redis: Redis, prefix: str) -> PartitionRecord | None:
    raw = await redis.get(Keyspace(prefix).key("partitions"))
    if raw is None:
        return None
    try:
        return _decode_record.decode(raw)
    except msgspec.DecodeError as exc:
        msg = f"{prefix}:partitions holds no partition record ({exc}): {raw!r:.80}"
        raise ConfigError(msg) from exc


async def open_partitions(
    redis: Redis, prefix: str, count: int, *, cluster: bool = False
) -> Partitions:
    """The store's partitions, checked against `count` (STREAM_PARTITIONS); the first
    process on an empty store records them. Raises `ConfigError` on a mismatch, and for one
    partition on a cluster (SPEC 6's key names have no hash tag: its steps would span slots)."""
    if cluster and count == 1:
        msg = (
            "REDIS_URL names a cluster node: set STREAM_PARTITIONS to 2 or more (a multiple "
            "of the masters spreads best), so that every step touches one slot"
        )
        raise ConfigError(msg)
    wanted = Partitions.of(prefix, count)
    for _ in range(3):
        record = await read_record(redis, prefix)
        if record is not None:
            _check(record, wanted)
            return wanted
        if count > 1:
            # A store used before partitions existed holds SPEC 6's streams and no record.
            for stream in (wanted.root.triggers, wanted.root.events, wanted.root.dead_letter):
                if await redis.exists(stream):
                    msg = (
                        f"STREAM_PARTITIONS is {count} but the store holds the unpartitioned "
                        f"stream {stream} (STREAM_PARTITIONS=1); start with 1, or drain it and "
                        "start on an empty prefix"
                    )
                    raise ConfigError(msg)
        if await redis.set(wanted.record_key, wanted.record(), nx=True):
            return wanted
    msg = f"{wanted.record_key} changed under three attempts to read it"
    raise ConfigError(msg)


async def read_partitions(redis: Redis, prefix: str, default_count: int) -> Partitions:
    """For tools that read what is there: the recorded partitions, else `default_count`."""
    record = await read_record(redis, prefix)
    if record is None:
        return Partitions.of(prefix, default_count)
    return Partitions(prefix, record.tags)


def _check(record: PartitionRecord, wanted: Partitions) -> None:
    if record.count != wanted.count:
        msg = (
            f"the store holds {record.count} stream partitions ({wanted.record_key}) but "
            f"STREAM_PARTITIONS is {wanted.count}: start every process with "
            f"STREAM_PARTITIONS={record.count} (the count of a store is fixed once it holds "
            "streams)"
        )
        raise ConfigError(msg)
    if tuple(record.tags) != wanted.tags:
        msg = (
            f"{wanted.record_key} names other hash tags than this version computes for "
            f"{wanted.count} partitions: {record.tags[:3]}... against {list(wanted.tags[:3])}..."
        )
        raise ConfigError(msg)
