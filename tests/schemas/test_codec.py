"""Stream entry and event encoding: round trips, poison entries, schema violations."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from schemas import codec
from schemas.codes import ErrorCode
from schemas.entries import ENTRY_TYPES, DisplayAckEntry, Entry, TriggerEntry
from schemas.errors import InvalidEntryError, PoisonEntryError
from schemas.events import (
    EVENT_TYPES,
    DisplayAcknowledged,
    Event,
    TriggerDeadLettered,
    TriggerProjected,
    TriggerRejected,
)


def as_stream(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """What redis-py returns for an entry written with these fields."""
    return {k.encode(): v for k, v in fields.items()}


TRIGGER = TriggerEntry(
    id="9b2f7c1e-0000-4000-8000-000000000001",
    user_id="user-1",
    screen_id="screen-1",
    order_id="A-1",
    display_index=2,
    timestamp=1_700_000_000_000,
    received_at=1_700_000_000_005,
    edge_id="edge-a",
)

ENTRIES: list[Any] = [
    pytest.param(TRIGGER, id="trigger"),
    pytest.param(
        DisplayAckEntry(
            trigger_id="t-1",
            event_id="1700000000000-0",
            screen_id="screen-1",
            status="shown",
            acked_at=1_700_000_000_100,
        ),
        id="display-ack-shown",
    ),
    pytest.param(
        DisplayAckEntry(
            trigger_id="t-1",
            event_id="1700000000000-0",
            screen_id="screen-1",
            status="failed",
            acked_at=1_700_000_000_100,
            error="pdf viewer crashed",
        ),
        id="display-ack-failed",
    ),
]


@pytest.mark.parametrize("entry", ENTRIES)
def test_entry_round_trip(entry: Entry) -> None:
    fields = codec.entry_fields(entry)

    assert set(fields) == {"type", "v", "data"}
    assert fields["v"] == b"1"
    assert ENTRY_TYPES[fields["type"].decode()] is type(entry)
    assert codec.decode_entry(as_stream(fields)) == entry


def test_entry_data_uses_camel_case() -> None:
    data = codec.decode_json(codec.entry_fields(TRIGGER)["data"])

    assert data == {
        "id": TRIGGER.id,
        "userId": "user-1",
        "screenId": "screen-1",
        "orderId": "A-1",
        "displayIndex": 2,
        "timestamp": 1_700_000_000_000,
        "receivedAt": 1_700_000_000_005,
        "edgeId": "edge-a",
    }


def test_extra_stream_fields_are_ignored() -> None:
    fields = as_stream(codec.entry_fields(TRIGGER))
    fields[b"traceparent"] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    assert codec.decode_entry(fields) == TRIGGER


# --- poison: nothing a retry could fix ------------------------------------------------------


def trigger_fields(**changes: bytes | None) -> dict[bytes, bytes]:
    fields = as_stream(codec.entry_fields(TRIGGER))
    for key, value in changes.items():
        if value is None:
            del fields[key.encode()]
        else:
            fields[key.encode()] = value
    return fields


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        pytest.param(trigger_fields(data=None), r"lacks field\(s\) data$", id="missing-data"),
        pytest.param(trigger_fields(type=None), r"lacks field\(s\) type$", id="missing-type"),
        pytest.param(trigger_fields(v=None), r"lacks field\(s\) v$", id="missing-version"),
        pytest.param({}, "type, v, data", id="no-fields"),
        pytest.param(trigger_fields(type=b"frobnicate"), "frobnicate", id="unknown-type"),
        pytest.param(
            trigger_fields(type=b"trigger.projected"), "trigger.projected", id="event-type"
        ),
        pytest.param(trigger_fields(v=b"2"), "version", id="version-2"),
        pytest.param(trigger_fields(v=b"one"), "version", id="version-garbage"),
        pytest.param(trigger_fields(data=b"{not json"), "not JSON", id="data-not-json"),
        pytest.param(trigger_fields(data=b""), "not JSON", id="data-empty"),
        pytest.param(trigger_fields(data=b"\xff\xfe"), "not JSON", id="data-not-utf8"),
        pytest.param(trigger_fields(data=b'[1, "a"]'), "list", id="data-json-array"),
        pytest.param(trigger_fields(data=b'"text"'), "str", id="data-json-string"),
        pytest.param(trigger_fields(data=b"null"), "NoneType", id="data-json-null"),
    ],
)
def test_poison_entry(fields: dict[bytes, bytes], match: str) -> None:
    with pytest.raises(PoisonEntryError, match=match):
        codec.decode_entry(fields)


# --- invalid: known type, decodable, but breaks the schema ----------------------------------


def trigger_object(**changes: object) -> dict[str, object]:
    data: dict[str, object] = codec.decode_json(codec.encode(TRIGGER))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param(trigger_object(orderId=None), "orderId", id="missing-field"),
        pytest.param(trigger_object(displayIndex=-1), "displayIndex", id="negative-index"),
        pytest.param(trigger_object(displayIndex="0"), "displayIndex", id="index-as-string"),
        pytest.param(trigger_object(orderId="x" * 129), "orderId", id="order-id-129-chars"),
        pytest.param(trigger_object(orderId=""), "orderId", id="order-id-empty"),
        pytest.param(trigger_object(screenId="s" * 257), "screenId", id="screen-id-too-long"),
    ],
)
def test_invalid_trigger_keeps_raw_object(raw: dict[str, object], match: str) -> None:
    fields = trigger_fields(data=msgspec.json.encode(raw))

    with pytest.raises(InvalidEntryError, match=match) as info:
        codec.decode_entry(fields)

    assert info.value.raw == raw


# --- schema evolution: a v1 writer may add fields (SPEC section 6) --------------------------


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"priority": 3}, id="number"),
        pytest.param({"origin": {"app": "scanner", "build": [1, 2]}}, id="object"),
        pytest.param({"note": None, "tags": ["a"]}, id="several"),
    ],
)
def test_trigger_with_fields_of_a_newer_writer_decodes(extra: dict[str, object]) -> None:
    fields = trigger_fields(data=msgspec.json.encode(trigger_object() | extra))

    assert codec.decode_entry(fields) == TRIGGER


def test_display_ack_with_fields_of_a_newer_writer_decodes() -> None:
    ack = DisplayAckEntry(
        trigger_id="t-1", event_id="1-0", screen_id="s", status="shown", acked_at=1
    )
    raw = codec.decode_json(codec.entry_fields(ack)["data"]) | {"renderMs": 12}
    fields = trigger_fields(type=b"display_ack", data=msgspec.json.encode(raw))

    assert codec.decode_entry(fields) == ack


def test_entry_fields_of_a_newer_writer_are_ignored() -> None:
    fields = trigger_fields(origin=b"edge-v2", priority=b"high")

    assert codec.decode_entry(fields) == TRIGGER


def test_order_id_of_128_chars_is_valid() -> None:
    fields = trigger_fields(data=msgspec.json.encode(trigger_object(orderId="x" * 128)))

    entry = codec.decode_entry(fields)

    assert isinstance(entry, TriggerEntry)
    assert entry.order_id == "x" * 128


def test_invalid_display_ack_status() -> None:
    ack = DisplayAckEntry(
        trigger_id="t-1", event_id="1-0", screen_id="s", status="shown", acked_at=1
    )
    fields = as_stream(codec.entry_fields(ack))
    raw = codec.decode_json(fields[b"data"])
    raw["status"] = "maybe"
    fields[b"data"] = msgspec.json.encode(raw)

    with pytest.raises(InvalidEntryError, match="status") as info:
        codec.decode_entry(fields)

    assert info.value.raw == raw


# --- events ---------------------------------------------------------------------------------

COMMON: dict[str, Any] = {
    "trigger_id": "t-1",
    "user_id": "user-1",
    "screen_id": "screen-1",
    "order_id": "A-1",
    "display_index": 0,
    "trigger_entry_id": "1700000000000-0",
    "timestamp": 1_700_000_000_000,
    "received_at": 1_700_000_000_005,
    "deliveries": 1,
}

PROJECTED = TriggerProjected(
    **COMMON,
    window_id="w-1",
    document_url="/documents/A-1.pdf",
    projected_at=1_700_000_000_010,
)
DEAD_LETTERED = TriggerDeadLettered(
    **COMMON,
    failed_at=1_700_000_000_020,
    code=ErrorCode.DEAD_LETTERED,
    message="order service unavailable",
)

EVENTS: list[Any] = [
    pytest.param(PROJECTED, id="projected"),
    pytest.param(msgspec.structs.replace(PROJECTED, superseded=True), id="projected-superseded"),
    pytest.param(
        TriggerRejected(
            **COMMON,
            rejected_at=1_700_000_000_010,
            code=ErrorCode.ORDER_NOT_FOUND,
            message="order 'A-1' not found",
        ),
        id="rejected",
    ),
    pytest.param(DEAD_LETTERED, id="dead-lettered"),
    pytest.param(
        msgspec.structs.replace(DEAD_LETTERED, dead_letter_id="1700000000021-0"),
        id="dead-lettered-with-id",
    ),
    pytest.param(
        DisplayAcknowledged(
            trigger_id="t-1",
            event_id="1700000000010-0",
            screen_id="screen-1",
            status="shown",
            acked_at=1_700_000_000_100,
            display_ack_entry_id="1700000000101-0",
            acknowledged_at=1_700_000_000_102,
        ),
        id="acknowledged",
    ),
    pytest.param(
        DisplayAcknowledged(
            trigger_id="t-1",
            event_id="1700000000010-0",
            screen_id="screen-1",
            status="failed",
            acked_at=1_700_000_000_100,
            display_ack_entry_id="1700000000101-0",
            acknowledged_at=1_700_000_000_102,
            error="no viewer",
        ),
        id="acknowledged-failed",
    ),
]


def test_every_event_type_is_covered() -> None:
    covered = {type(p.values[0]) for p in EVENTS}
    assert covered == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", EVENTS)
def test_event_round_trip(event: Event) -> None:
    fields = codec.event_fields(event)

    assert set(fields) == {"type", "v", "data"}
    assert fields["v"] == b"1"
    assert fields["type"].decode() == codec.event_type(event)
    assert EVENT_TYPES[codec.event_type(event)] is type(event)
    assert codec.decode_event(as_stream(fields)) == event


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({b"type": b"trigger"}, "trigger", id="entry-type"),
        pytest.param({b"v": b"2"}, "version", id="version-2"),
        pytest.param({b"data": b"[]"}, "invalid", id="data-array"),
        pytest.param({b"data": b"{"}, "invalid", id="data-not-json"),
    ],
)
def test_poison_event(changes: dict[bytes, bytes], match: str) -> None:
    fields = as_stream(codec.event_fields(PROJECTED))
    fields.update(changes)

    with pytest.raises(PoisonEntryError, match=match):
        codec.decode_event(fields)


# Each event type with exactly the fields SPEC section 6 lists ("…" being the trigger's
# identity: triggerId, userId, screenId, orderId, displayIndex, triggerEntryId, timestamp,
# receivedAt), as an older or another writer may have written them.
IDENTITY: dict[str, object] = {
    "triggerId": "t-1",
    "userId": "user-1",
    "screenId": "screen-1",
    "orderId": "A-1",
    "displayIndex": 0,
    "triggerEntryId": "1700000000000-0",
    "timestamp": 1_700_000_000_000,
    "receivedAt": 1_700_000_000_005,
}
SPEC_ONLY: list[Any] = [
    pytest.param(
        "trigger.projected",
        IDENTITY
        | {
            "windowId": "w-1",
            "documentUrl": "/d/A-1.pdf",
            "projectedAt": 1_700_000_000_010,
            "deliveries": 1,
            "superseded": False,
        },
        id="projected",
    ),
    pytest.param(
        "trigger.rejected",
        IDENTITY | {"code": "ORDER_NOT_FOUND", "message": "no such order"},
        id="rejected",
    ),
    pytest.param(
        "trigger.dead_lettered",
        IDENTITY
        | {
            "code": "DEAD_LETTERED",
            "message": "timed out",
            "deliveries": 5,
            "deadLetterId": "1700000000030-0",
        },
        id="dead-lettered",
    ),
    pytest.param(
        "display.acknowledged",
        {
            "triggerId": "t-1",
            "eventId": "1700000000010-0",
            "screenId": "screen-1",
            "status": "failed",
            "error": "no viewer",
            "ackedAt": 1_700_000_000_100,
        },
        id="acknowledged",
    ),
]


@pytest.mark.parametrize(("kind", "data"), SPEC_ONLY)
def test_event_with_only_the_spec_fields_decodes(kind: str, data: dict[str, object]) -> None:
    fields = {b"type": kind.encode(), b"v": b"1", b"data": msgspec.json.encode(data)}

    event = codec.decode_event(fields)

    assert type(event) is EVENT_TYPES[kind]
    assert (
        msgspec.structs.asdict(event).items()
        >= {
            # every field that was there reads back as written
            _snake(name): value
            for name, value in data.items()
        }.items()
    )


@pytest.mark.parametrize(("kind", "data"), SPEC_ONLY)
def test_event_with_fields_of_a_newer_writer_decodes(kind: str, data: dict[str, object]) -> None:
    plain = {b"type": kind.encode(), b"v": b"1", b"data": msgspec.json.encode(data)}
    newer = plain | {
        b"data": msgspec.json.encode(data | {"region": "eu-1", "hops": [1, 2]}),
        b"origin": b"worker-v2",
    }

    assert codec.decode_event(newer) == codec.decode_event(plain)


def test_rejection_code_newer_than_this_reader_decodes() -> None:
    data = IDENTITY | {"code": "SCREEN_RETIRED", "message": "screen retired"}
    fields = {b"type": b"trigger.rejected", b"v": b"1", b"data": msgspec.json.encode(data)}

    event = codec.decode_event(fields)

    assert isinstance(event, TriggerRejected)
    assert event.code == "SCREEN_RETIRED"


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        pytest.param("trigger.rejected", {"code": "X", "message": "m"}, id="rejected-no-ids"),
        pytest.param("trigger.projected", dict(IDENTITY), id="projected-no-document"),
        pytest.param("display.acknowledged", {"triggerId": "t"}, id="ack-no-status"),
    ],
)
def test_event_without_a_listed_field_is_poison(kind: str, data: dict[str, object]) -> None:
    fields = {b"type": kind.encode(), b"v": b"1", b"data": msgspec.json.encode(data)}

    with pytest.raises(PoisonEntryError, match="invalid"):
        codec.decode_event(fields)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def test_dead_lettered_encoding_ends_with_dead_letter_id() -> None:
    # commit.lua appends the dead-letter entry id: `deadLetterId` must be last, and empty
    # (services/worker/projector.py also refuses, with a ContractError, to send another layout).
    data = codec.event_fields(DEAD_LETTERED)["data"]

    assert data.endswith(b'"deadLetterId":""}')
    assert codec.encode(DEAD_LETTERED) == data
