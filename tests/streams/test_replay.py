"""`streams.replay`: bounds, paging, filters and undecodable entries on a real stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from redis.asyncio import Redis

from schemas import codec
from schemas.codes import ErrorCode
from schemas.errors import PoisonEntryError, RemoteDisplayError, ReplayRangeError
from schemas.events import TriggerRejected
from services.analytics.event_log import read_events
from streams.keys import Keyspace
from streams.replay import (
    Record,
    parse_bound,
    read,
    read_decoded,
    read_pages,
)
from streams.retention import oldest_id, retention

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
PER_MS = 4
COUNT = 3_000
TYPES = ("trigger.projected", "trigger.rejected", "display.acknowledged")


def entry_id(i: int) -> str:
    """Entry i of the generated stream: four entries per millisecond, seq 0..3."""
    return f"{T0 + i // PER_MS}-{i % PER_MS}"


def expected_data(i: int) -> dict[str, object]:
    return {"screenId": f"s{i % 5}", "n": i}


async def fill(redis: Redis, stream: str, count: int = COUNT) -> list[str]:
    ids = [entry_id(i) for i in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for i, ident in enumerate(ids):
            fields = {
                "type": TYPES[i % len(TYPES)],
                "v": "1",
                "data": msgspec.json.encode(expected_data(i)),
            }
            pipe.xadd(stream, fields, id=ident)
        await pipe.execute()
    return ids


@pytest.fixture
async def filled(redis: Redis, keyspace: Keyspace) -> list[str]:
    return await fill(redis, keyspace.events)


async def ids_of(redis: Redis, stream: str, **kwargs: object) -> list[str]:
    return [record.id async for record in read(redis, stream, **kwargs)]


# --- parse_bound -------------------------------------------------------------------------------

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NOW_MS = 1_717_243_200_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1700000000000-5", "1700000000000-5", id="entry-id"),
        pytest.param("1700000000000", "1700000000000-0", id="ms-alone"),
        pytest.param(" 12-3 ", "12-3", id="spaces"),
        pytest.param("0", "0-0", id="zero"),
        pytest.param("2023-11-14T22:13:20Z", "1700000000000-0", id="iso-z"),
        pytest.param("2023-11-14T22:13:20.123Z", "1700000000123-0", id="iso-ms"),
        pytest.param("2023-11-15T00:13:20+02:00", "1700000000000-0", id="iso-offset"),
        pytest.param("2023-11-14T22:13:20", "1700000000000-0", id="naive-is-utc"),
        pytest.param("2023-11-14 22:13", "1699999980000-0", id="space-separator"),
        pytest.param("2023-11-14", "1699920000000-0", id="date-alone"),
        pytest.param("now", f"{NOW_MS}-0", id="now"),
        pytest.param("-15m", f"{NOW_MS - 15 * 60_000}-0", id="minutes-ago"),
        pytest.param("-2h", f"{NOW_MS - 2 * 3_600_000}-0", id="hours-ago"),
        pytest.param("-7d", f"{NOW_MS - 7 * 86_400_000}-0", id="days-ago"),
        pytest.param("-30s", f"{NOW_MS - 30_000}-0", id="seconds-ago"),
    ],
)
def test_parse_bound(text: str, expected: str) -> None:
    assert parse_bound(text, now=NOW) == expected


def test_parse_bound_takes_datetimes() -> None:
    berlin = timezone(timedelta(hours=1))
    assert parse_bound(datetime(2023, 11, 14, 23, 13, 20, tzinfo=berlin)) == "1700000000000-0"
    assert parse_bound(datetime(2023, 11, 14, 22, 13, 20)) == "1700000000000-0"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("yesterday", id="words"),
        pytest.param("", id="empty"),
        pytest.param("12-ab", id="bad-seq"),
        pytest.param("1-2-3", id="three-parts"),
        pytest.param("-1", id="negative-id"),
        pytest.param("-5w", id="unknown-unit"),
        pytest.param("2024-13-45", id="bad-date"),
        pytest.param("1969-12-31T23:59:59Z", id="before-1970"),
        pytest.param(str(2**64), id="ms-too-large"),
        pytest.param(f"1-{2**64}", id="seq-too-large"),
    ],
)
def test_bad_bound_is_a_one_line_replay_range_error(text: str) -> None:
    with pytest.raises(ReplayRangeError) as caught:
        parse_bound(text, now=NOW)

    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, RemoteDisplayError)
    message = str(caught.value)
    assert "\n" not in message
    assert f"`{text}`" in message


# --- ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 7, 1000, COUNT, COUNT + 1])
async def test_reads_everything_in_order_across_pages(
    redis: Redis, keyspace: Keyspace, filled: list[str], page_size: int
) -> None:
    records = [r async for r in read(redis, keyspace.events, page_size=page_size)]

    assert [r.id for r in records] == filled
    assert [r.data for r in records] == [expected_data(i) for i in range(COUNT)]
    assert [r.type for r in records] == [TYPES[i % 3] for i in range(COUNT)]
    assert {r.v for r in records} == {1}
    assert all(r.fields == {} and not r.undecodable for r in records)


@pytest.mark.parametrize("page_size", [3, 1000])
@pytest.mark.parametrize(
    ("since", "until", "first", "end"),
    [
        pytest.param(entry_id(101), entry_id(2002), 101, 2002, id="ids-since-in-until-out"),
        pytest.param(str(T0 + 25), None, 100, COUNT, id="ms-since-includes-seq-0"),
        pytest.param(None, str(T0 + 25), 0, 100, id="ms-until-excludes-that-ms"),
        pytest.param(entry_id(103), entry_id(104), 103, 104, id="one-entry"),
        pytest.param(entry_id(104), entry_id(104), 104, 104, id="empty"),
        pytest.param(entry_id(200), entry_id(100), 200, 200, id="backwards"),
        pytest.param(None, "0-0", 0, 0, id="until-first-possible-id"),
        pytest.param(None, entry_id(0), 0, 0, id="until-first-entry"),
        pytest.param(entry_id(COUNT - 1), None, COUNT - 1, COUNT, id="last-entry"),
        pytest.param(f"{2**64 - 1}-{2**64 - 1}", None, COUNT, COUNT, id="past-the-end"),
        pytest.param("2023-11-14T22:13:20.100Z", "2023-11-14T22:13:20.500Z", 400, 2000, id="iso-z"),
        pytest.param(
            "2023-11-15T00:13:20.100+02:00",
            "2023-11-14T23:13:20.500+01:00",
            400,
            2000,
            id="iso-offsets",
        ),
        pytest.param("2023-11-14T22:13:20.100", None, 400, COUNT, id="iso-naive"),
        pytest.param("2023-11-14", "2023-11-15", 0, COUNT, id="dates"),
        pytest.param(None, "2023-11-14", 0, 0, id="until-date-before"),
    ],
)
async def test_since_is_inclusive_until_exclusive(
    redis: Redis,
    keyspace: Keyspace,
    filled: list[str],
    since: str | None,
    until: str | None,
    first: int,
    end: int,
    page_size: int,
) -> None:
    got = await ids_of(redis, keyspace.events, since=since, until=until, page_size=page_size)

    assert got == filled[first:end]


async def test_reads_entries_appended_during_the_read_once(
    redis: Redis, keyspace: Keyspace
) -> None:
    await fill(redis, keyspace.events, 10)
    seen: list[str] = []
    async for record in read(redis, keyspace.events, page_size=4):
        seen.append(record.id)
        if len(seen) == 1:  # appended behind the page being read: read once, at the end
            for ms in (T0 + 10, T0 + 11):
                await redis.xadd(keyspace.events, {"type": "x", "v": "1", "data": "{}"}, id=ms)

    assert seen == [entry_id(i) for i in range(10)] + [f"{T0 + 10}-0", f"{T0 + 11}-0"]


async def test_a_missing_stream_reads_as_empty(redis: Redis, keyspace: Keyspace) -> None:
    assert await ids_of(redis, keyspace.events) == []
    assert await oldest_id(redis, keyspace.events) is None
    assert await retention(redis, keyspace.events) == (None, None)


async def test_bad_bound_raises_before_reading(redis: Redis, keyspace: Keyspace) -> None:
    with pytest.raises(ReplayRangeError, match="`soon`"):
        await ids_of(redis, keyspace.events, since="soon")


async def test_page_size_must_be_positive(redis: Redis, keyspace: Keyspace) -> None:
    with pytest.raises(ValueError, match="page_size"):
        await ids_of(redis, keyspace.events, page_size=0)


# --- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [5, 1000])
async def test_type_and_where_filters(
    redis: Redis, keyspace: Keyspace, filled: list[str], page_size: int
) -> None:
    one_type = await ids_of(redis, keyspace.events, types={"trigger.rejected"}, page_size=page_size)
    as_string = await ids_of(redis, keyspace.events, types="trigger.rejected")
    two_types = await ids_of(
        redis, keyspace.events, types=["trigger.rejected", "display.acknowledged"]
    )
    screen = await ids_of(redis, keyspace.events, where={"screenId": "s3"}, page_size=page_size)
    both = await ids_of(
        redis,
        keyspace.events,
        types={"trigger.projected"},
        where={"screenId": "s3"},
        since=entry_id(1000),
        until=entry_id(2000),
        page_size=page_size,
    )
    numeric = await ids_of(redis, keyspace.events, where={"n": 42})

    assert one_type == as_string == [filled[i] for i in range(COUNT) if i % 3 == 1]
    assert two_types == [filled[i] for i in range(COUNT) if i % 3 != 0]
    assert screen == [filled[i] for i in range(COUNT) if i % 5 == 3]
    assert both == [filled[i] for i in range(1000, 2000) if i % 3 == 0 and i % 5 == 3]
    assert numeric == [filled[42]]
    assert await ids_of(redis, keyspace.events, where={"screenId": "nowhere"}) == []
    assert await ids_of(redis, keyspace.events, types=set()) == []


async def test_pages_report_what_they_scanned(
    redis: Redis, keyspace: Keyspace, filled: list[str]
) -> None:
    got = [
        (len(page.records), page.scanned, page.last_id)
        async for page in read_pages(
            redis, keyspace.events, where={"screenId": "s0"}, page_size=1000
        )
    ]

    assert got == [(200, 1000, filled[999]), (200, 1000, filled[1999]), (200, 1000, filled[-1])]


# --- undecodable entries -------------------------------------------------------------------------


async def add_odd_entries(redis: Redis, stream: str) -> None:
    await redis.xadd(stream, {"type": "a", "v": "1", "data": '{"ok": 1}'}, id="1-0")
    await redis.xadd(stream, {"type": "a", "v": "1", "data": "{not json"}, id="2-0")
    await redis.xadd(stream, {"type": "a", "v": "x", "garbage": "yes"}, id="3-0")
    await redis.xadd(
        stream,
        {"type": "a", "v": "1", "data": '{\n  "screenId": "s1"\n}', "traceparent": "00-ab"},
        id="4-0",
    )
    await redis.xadd(stream, {"v": "2", "data": "[1, 2]"}, id="5-0")


async def test_undecodable_entries_are_yielded_with_a_flag(
    redis: Redis, keyspace: Keyspace
) -> None:
    await add_odd_entries(redis, keyspace.dead_letter)

    records = [r async for r in read(redis, keyspace.dead_letter, page_size=2)]

    assert [(r.id, r.type, r.v, r.data, r.undecodable) for r in records] == [
        ("1-0", "a", 1, {"ok": 1}, False),
        ("2-0", "a", 1, None, True),
        ("3-0", "a", None, None, True),
        ("4-0", "a", 1, {"screenId": "s1"}, False),
        ("5-0", "", 2, [1, 2], False),
    ]
    assert records[1].raw == b"{not json"
    assert "malformed" in (records[1].decode_error or "")
    assert records[2].decode_error == "entry has no data field"
    assert records[2].fields == {"garbage": "yes"}
    assert records[3].fields == {"traceparent": "00-ab"}
    assert await ids_of(redis, keyspace.dead_letter, where={"screenId": "s1"}) == ["4-0"]


async def test_passthrough_keeps_data_as_one_line_json(redis: Redis, keyspace: Keyspace) -> None:
    await add_odd_entries(redis, keyspace.dead_letter)

    plain = [
        r
        async for p in read_pages(redis, keyspace.dead_letter, passthrough=True)
        for r in p.records
    ]
    filtered = [
        r
        async for p in read_pages(
            redis, keyspace.dead_letter, passthrough=True, where={"screenId": "s1"}
        )
        for r in p.records
    ]

    def text(record: Record) -> bytes | None:
        return None if record.data is None else bytes(record.data)

    assert [text(r) for r in plain] == [b'{"ok": 1}', None, None, b'{"screenId":"s1"}', b"[1, 2]"]
    assert [text(r) for r in filtered] == [b'{"screenId":"s1"}']
    assert msgspec.json.encode(plain[0].data) == b'{"ok": 1}'


# --- retention -----------------------------------------------------------------------------------


async def test_oldest_id_and_retention_after_trimming(redis: Redis, keyspace: Keyspace) -> None:
    stream = keyspace.events
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1, 501):
            pipe.xadd(
                stream,
                {"type": "x", "v": "1", "data": "{}"},
                id=f"{i}-0",
                maxlen=100,
                approximate=False,
            )
        await pipe.execute()

    assert await oldest_id(redis, stream) == "401-0"
    assert await retention(redis, stream) == ("401-0", 400)
    assert (await ids_of(redis, stream, since="1"))[0] == "401-0"


async def test_retention_of_an_untrimmed_stream(redis: Redis, keyspace: Keyspace) -> None:
    await fill(redis, keyspace.events, 10)

    assert await retention(redis, keyspace.events) == (entry_id(0), 0)


# --- typed reads ---------------------------------------------------------------------------------


def rejected(n: int, screen: str) -> TriggerRejected:
    return TriggerRejected(
        trigger_id=f"t{n}",
        user_id="u",
        screen_id=screen,
        order_id="o",
        display_index=0,
        trigger_entry_id="1-0",
        timestamp=T0,
        received_at=T0,
        rejected_at=T0,
        deliveries=1,
        code=ErrorCode.ORDER_NOT_FOUND,
        message="no such order",
    )


async def test_typed_reads_give_event_structs(redis: Redis, keyspace: Keyspace) -> None:
    for n in range(6):
        event = rejected(n, f"s{n % 2}")
        await redis.xadd(keyspace.events, codec.event_fields(event), id=f"{10 + n}-0")
    await redis.xadd(keyspace.events, {"type": "bogus", "v": "1", "data": "{}"}, id="20-0")

    typed = [
        (ident, event)
        async for ident, event in read_events(
            redis, prefix=keyspace.prefix, since="11", until="20", screen="s1", page_size=2
        )
    ]
    generic = [
        ident
        async for ident, _ in read_decoded(
            redis, keyspace.events, codec.decode_event, skip_undecodable=True
        )
    ]

    assert [ident for ident, _ in typed] == ["11-0", "13-0", "15-0"]
    assert all(isinstance(event, TriggerRejected) for _, event in typed)
    assert [event.trigger_id for _, event in typed] == ["t1", "t3", "t5"]  # type: ignore[attr-defined]
    assert generic == [f"{10 + n}-0" for n in range(6)]
    with pytest.raises(PoisonEntryError, match="bogus"):
        _ = [e async for e in read_events(redis, prefix=keyspace.prefix)]
