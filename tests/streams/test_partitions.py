"""`streams.partitions`: key names per partition, hash tags that spread, the store's record."""

from __future__ import annotations

import collections
import zlib

import msgspec
import pytest
from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from schemas.errors import ConfigError
from services.keys import result_key, screen_key
from streams.keys import Keyspace
from streams.partitions import (
    Partitions,
    open_partitions,
    partition_index,
    read_partitions,
    spread_tags,
)
from streams.replay import pages


def test_one_partition_keeps_the_key_names_of_spec_6() -> None:
    layout = Partitions.of("rd", 1)
    [space] = layout.spaces
    assert (space.triggers, space.events, space.dead_letter) == (
        "rd:triggers",
        "rd:events",
        "rd:dead-letter",
    )
    assert screen_key(layout.for_screen("s1"), "s1") == "rd:screen:s1"
    assert layout.record_key == "rd:partitions"
    assert layout.record() == b'{"count":1,"tags":[]}'


def test_every_key_of_a_partition_is_in_one_slot() -> None:
    layout = Partitions.of("rd", 12)
    for screen in (f"screen-{n}" for n in range(200)):
        space = layout.for_screen(screen)
        keys = [
            space.triggers,
            space.events,
            space.dead_letter,
            screen_key(space, screen),
            result_key(space, "user-1", "trigger-1"),
            space.key("consumer", "projector", "host-1"),
        ]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys
        assert keys[0].startswith("rd:{p")


@pytest.mark.parametrize("count", [2, 3, 4, 12, 16, 64])
def test_tags_spread_evenly_over_masters_with_equal_slot_ranges(count: int) -> None:
    tags = spread_tags(count)
    slots = [key_slot(tag.encode()) for tag in tags]
    assert len(set(slots)) == count
    for index, slot in enumerate(slots):
        assert index * REDIS_CLUSTER_HASH_SLOTS // count <= slot
        assert slot < (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    for masters in range(1, 7):
        if count % masters:
            continue
        per_master = collections.Counter(
            slot * masters // REDIS_CLUSTER_HASH_SLOTS for slot in slots
        )
        assert sorted(per_master.values()) == [count // masters] * masters, (masters, per_master)


def test_plain_numeric_tags_would_not_have_spread() -> None:
    # The reason for computed tags (Centrifugo #554): {0}..{11} crowd onto few masters.
    per_master = collections.Counter(
        key_slot(str(n).encode()) * 3 // REDIS_CLUSTER_HASH_SLOTS for n in range(12)
    )
    assert sorted(per_master.values()) != [4, 4, 4]


def test_a_screens_partition_is_crc32_of_its_id() -> None:
    assert partition_index("screen-1", 1) == 0
    for screen in ("screen-1", "hall-2", "Kasse 3", "화면-4"):
        assert partition_index(screen, 12) == zlib.crc32(screen.encode()) % 12
    spread = collections.Counter(partition_index(f"s{n}", 4) for n in range(4000))
    assert min(spread.values()) > 900


def test_partition_counts_out_of_range_are_refused() -> None:
    with pytest.raises(ConfigError, match="between 1 and 1024"):
        spread_tags(0)
    with pytest.raises(ConfigError, match="between 1 and 1024"):
        spread_tags(1025)


async def test_the_first_start_records_the_layout_and_later_starts_must_match(
    redis: Redis, keyspace: Keyspace
) -> None:
    layout = await open_partitions(redis, keyspace.prefix, 4)
    raw = await redis.get(f"{keyspace.prefix}:partitions")
    assert msgspec.json.decode(raw) == {"count": 4, "tags": list(spread_tags(4))}
    again = await open_partitions(redis, keyspace.prefix, 4)
    assert again.tags == layout.tags
    with pytest.raises(ConfigError, match=r"holds 4 stream partitions .* STREAM_PARTITIONS is 2"):
        await open_partitions(redis, keyspace.prefix, 2)
    with pytest.raises(ConfigError, match="STREAM_PARTITIONS=4"):
        await open_partitions(redis, keyspace.prefix, 1)
    # Tools read what the store holds, whatever their own setting.
    assert (await read_partitions(redis, keyspace.prefix, 1)).count == 4


async def test_partitions_on_a_store_with_unpartitioned_streams_are_refused(
    redis: Redis, keyspace: Keyspace
) -> None:
    await redis.xadd(keyspace.events, {"type": "x", "v": "1", "data": "{}"})
    with pytest.raises(ConfigError, match=rf"unpartitioned stream {keyspace.events}"):
        await open_partitions(redis, keyspace.prefix, 3)
    assert await redis.get(f"{keyspace.prefix}:partitions") is None  # nothing recorded
    assert (await open_partitions(redis, keyspace.prefix, 1)).count == 1


async def test_a_record_that_is_not_json_is_a_clear_error(redis: Redis, keyspace: Keyspace) -> None:
    await redis.set(f"{keyspace.prefix}:partitions", b"twelve")
    with pytest.raises(ConfigError, match="holds no partition record"):
        await open_partitions(redis, keyspace.prefix, 12)


async def test_reading_several_streams_merges_them_by_entry_id(
    redis: Redis, keyspace: Keyspace
) -> None:
    streams = [keyspace.key("a"), keyspace.key("b"), keyspace.key("c")]
    ids = []
    for n in range(10):
        stream = streams[n * 7 % 3]
        entry_id = f"{1000 + n // 2}-{n % 2}"
        await redis.xadd(stream, {"n": str(n)}, id=entry_id)
        ids.append(entry_id)
    await redis.xadd(streams[1], {"n": "late"}, id="1004-1")  # equal to an id of streams[2]
    read = [
        (raw_id.decode(), fields[b"n"].decode())
        async for page in pages(redis, streams, page_size=3)
        for raw_id, fields in page
    ]
    assert [i for i, _ in read] == sorted(
        [*ids, "1004-1"], key=lambda i: tuple(map(int, i.split("-")))
    )
    assert [n for i, n in read if i == "1004-1"] == ["9", "late"]  # the stream order breaks ties
    sizes = [len(page) async for page in pages(redis, streams, page_size=4)]
    assert sizes == [4, 4, 3]
    since = [
        raw async for page in pages(redis, streams, since="1002-0", until="1004") for raw, _ in page
    ]
    assert [raw.decode() for raw in since] == ["1002-0", "1002-1", "1003-0", "1003-1"]
