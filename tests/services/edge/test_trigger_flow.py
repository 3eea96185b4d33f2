"""The core flow over real Socket.IO: connect, trigger, ack on projection, display, repeats."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from services.settings import Settings
from streams.keys import Keyspace
from tests.edge_helpers import (
    RunningEdge,
    connect,
    mint,
    refused,
    trigger_payload,
)
from tests.helpers import read_stream, wait_until


async def test_trigger_is_acked_on_projection_and_displayed(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    screen = await connect(edge.url, mint(role="screen"))
    controller = await connect(edge.url, mint())
    try:
        payload = trigger_payload("ORD-7", displayIndex=1)
        ack = await controller.emit("trigger", payload)
        assert ack["id"] == payload["id"]
        assert ack["success"] is True, ack
        assert ack["duplicate"] is False
        data = ack["data"]
        assert data["orderId"] == "ORD-7"
        assert data["screenId"] == "screen-1"
        assert data["displayIndex"] == 1
        assert data["documentUrl"] == "/documents/ORD-7.pdf"
        assert data["windowId"]
        assert data["superseded"] is False
        [display] = await screen.wait_for("display")
        assert display["eventId"] == data["eventId"]
        assert display["triggerId"] == payload["id"]
        assert display["documentUrl"] == "/documents/ORD-7.pdf"

        async def acknowledged() -> bool:
            events = await read_stream(redis, keyspace.events)
            return any(e.type == "display.acknowledged" for e in events)

        await wait_until(acknowledged)
        events = await read_stream(redis, keyspace.events)
        [shown] = [e for e in events if e.type == "display.acknowledged"]
        assert shown.data["status"] == "shown"
        assert shown.data["eventId"] == data["eventId"]
    finally:
        await screen.sio.disconnect()
        await controller.sio.disconnect()


async def test_repeats_return_the_original_result_as_duplicates(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    controller = await connect(edge.url, mint())
    try:
        payload = trigger_payload()
        first, second = await asyncio.gather(
            controller.emit("trigger", payload), controller.emit("trigger", payload)
        )
        third = await controller.emit("trigger", payload)
        assert sorted([first["duplicate"], second["duplicate"]]) == [False, True]
        assert third["duplicate"] is True
        assert first["data"]["eventId"] == second["data"]["eventId"] == third["data"]["eventId"]
        assert await redis.xlen(keyspace.triggers) == 1
        # Another user may use the same id.
        other = await connect(edge.url, mint(user="user-2"))
        try:
            ack = await other.emit("trigger", payload)
            assert ack["success"] is True
            assert ack["duplicate"] is False
        finally:
            await other.sio.disconnect()
    finally:
        await controller.sio.disconnect()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param("not an object", "VALIDATION_ERROR", id="string"),
        pytest.param([1, 2], "VALIDATION_ERROR", id="array"),
        pytest.param(
            {"id": "x", "orderId": "a", "timestamp": 1}, "VALIDATION_ERROR", id="bad-uuid"
        ),
        pytest.param(trigger_payload(extra=1), "VALIDATION_ERROR", id="unknown-field"),
        pytest.param(trigger_payload(orderId=""), "VALIDATION_ERROR", id="empty-order"),
        pytest.param(trigger_payload(orderId="x" * 129), "VALIDATION_ERROR", id="long-order"),
        pytest.param(trigger_payload(displayIndex=-1), "VALIDATION_ERROR", id="negative-index"),
        pytest.param(trigger_payload(timestamp="now"), "VALIDATION_ERROR", id="string-time"),
        pytest.param(trigger_payload(timestamp=1), "REQUEST_EXPIRED", id="expired"),
    ],
)
async def test_bad_triggers_are_answered_and_not_appended(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace, payload: object, code: str
) -> None:
    controller = await connect(edge.url, mint())
    try:
        ack = await controller.emit("trigger", payload)
        assert ack["success"] is False
        assert ack["code"] == code
        assert ack["error"]
        assert await redis.xlen(keyspace.triggers) == 0
    finally:
        await controller.sio.disconnect()


async def test_a_screen_may_not_trigger(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    screen = await connect(edge.url, mint(role="screen"))
    try:
        ack = await screen.emit("trigger", trigger_payload())
        assert ack["code"] == "FORBIDDEN"
        assert await redis.xlen(keyspace.triggers) == 0
    finally:
        await screen.sio.disconnect()


async def test_not_found_and_status(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace, edge_settings: Settings
) -> None:
    controller = await connect(edge.url, mint())
    try:
        unknown = await controller.emit("trigger:status", {"id": "never-sent"})
        assert unknown["code"] == "UNKNOWN_TRIGGER"
        payload = trigger_payload()
        ack = await controller.emit("trigger", payload)
        status = await controller.emit("trigger:status", {"id": payload["id"]})
        assert status["success"] is True
        assert status["data"]["eventId"] == ack["data"]["eventId"]
    finally:
        await controller.sio.disconnect()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(None, "MISSING_TOKEN", id="missing"),
        pytest.param("garbage", "INVALID_TOKEN", id="garbage"),
        pytest.param(
            mint(secret="another-secret-0123456789abcdef0123"), "INVALID_TOKEN", id="forged"
        ),
        pytest.param(mint(ttl=-10), "TOKEN_EXPIRED", id="expired"),
        pytest.param(mint(role="root"), "INVALID_TOKEN", id="unknown-role"),
        pytest.param(mint(role=None), "INVALID_TOKEN", id="no-role"),
        pytest.param(mint(typ="refresh"), "INVALID_TOKEN", id="refresh-typ"),
    ],
)
async def test_connect_refusals(edge: RunningEdge, token: str | None, message: str) -> None:
    assert await refused(edge.url, token) == message


async def test_origin_not_allowed(edge: RunningEdge) -> None:
    message = await refused(edge.url, mint(), headers={"Origin": "https://evil.example"})
    assert message == "ORIGIN_NOT_ALLOWED"
    allowed = await connect(edge.url, mint(), headers={"Origin": "http://localhost:3000"})
    await allowed.sio.disconnect()


async def test_screen_recovers_its_display_on_connect(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    controller = await connect(edge.url, mint())
    try:
        ack = await controller.emit("trigger", trigger_payload("LATEST"))
        event_id = ack["data"]["eventId"]
    finally:
        await controller.sio.disconnect()
    fresh = await connect(edge.url, mint(role="screen"))
    stale = await connect(edge.url, mint(role="screen"), last_event_id="0-1")
    current = await connect(edge.url, mint(role="screen"), last_event_id=event_id)
    try:
        assert (await fresh.wait_for("display"))[0]["orderId"] == "LATEST"
        assert (await stale.wait_for("display"))[0]["eventId"] == event_id
        await asyncio.sleep(0.3)
        assert "display" not in current.received
    finally:
        for client in (fresh, stale, current):
            await client.sio.disconnect()


async def test_health(edge: RunningEdge) -> None:
    import aiohttp

    controller = await connect(edge.url, mint())
    try:
        ok = await controller.emit("trigger", trigger_payload())
        bad = await controller.emit("trigger", {"orderId": 5})
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{edge.url}/health") as response,
        ):
            body = await response.json()
    finally:
        await controller.sio.disconnect()
    assert ok["success"] is True
    assert bad["code"] == "VALIDATION_ERROR"
    assert response.status == 200
    assert body.keys() == {
        "status",
        "timestamp",
        "uptime",
        "memory",
        "connections",
        "redis",
        "streams",
        "metrics",
    }
    assert body["status"] == "ok"
    assert body["redis"] == "ok"
    assert abs(body["timestamp"] - time.time() * 1000) < 60_000  # epoch ms
    assert isinstance(body["uptime"], float | int)
    assert body["uptime"] >= 0
    assert body["memory"]["rss"] > 0
    assert body["connections"] == 1  # the controller asking
    assert body["streams"] == {"lag": 0, "pending": 0, "deadLetter": 0}
    metrics = body["metrics"]
    assert metrics.keys() == {
        "totalRequests",
        "successCount",
        "failureCount",
        "successRate",
        "errorBreakdown",
    }
    assert (metrics["totalRequests"], metrics["successCount"], metrics["failureCount"]) == (2, 1, 1)
    assert metrics["successRate"] == 0.5
    assert metrics["errorBreakdown"] == {"VALIDATION_ERROR": 1}
