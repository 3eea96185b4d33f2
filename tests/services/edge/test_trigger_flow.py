"""The core flow over real Socket.IO: connect, trigger, ack on projection, display, repeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import pytest
from redis.asyncio import Redis

from services.config.settings import Settings
from services.edge.desk import TriggerDesk
from services.edge.tokens import AccessClaims
from services.keys import result_key, screen_key
from services.worker.orders import TemplateResolver
from services.worker.projector import Projector
from streams.batcher import PipelineBatcher
from streams.consumer import Delivery
from streams.keys import Keyspace
from streams.partitions import Partitions
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    RunningEdge,
    connect,
    mint,
    refused,
    running_edge,
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
        # Minted when the test runs: a token minted at import expires in a slow run.
        pytest.param(lambda: None, "MISSING_TOKEN", id="missing"),
        pytest.param(lambda: "garbage", "INVALID_TOKEN", id="garbage"),
        pytest.param(
            lambda: mint(secret="another-secret-0123456789abcdef0123"),
            "INVALID_TOKEN",
            id="forged",
        ),
        pytest.param(lambda: mint(ttl=-10), "TOKEN_EXPIRED", id="expired"),
        pytest.param(lambda: mint(role="root"), "INVALID_TOKEN", id="unknown-role"),
        pytest.param(lambda: mint(role=None), "INVALID_TOKEN", id="no-role"),
        pytest.param(lambda: mint(typ="refresh"), "INVALID_TOKEN", id="refresh-typ"),
    ],
)
async def test_connect_refusals(
    edge: RunningEdge, token: Callable[[], str | None], message: str
) -> None:
    assert await refused(edge.url, token()) == message


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


async def test_an_admin_may_trigger(edge: RunningEdge, redis: Redis, keyspace: Keyspace) -> None:
    admin = await connect(edge.url, mint(user="ops", screen="screen-3", role="admin"))
    try:
        ack = await admin.emit("trigger", trigger_payload("ADMIN-1"))
    finally:
        await admin.sio.disconnect()
    assert ack["success"] is True, ack
    assert ack["data"]["screenId"] == "screen-3"  # the token's screen, as for a controller
    [entry] = await read_stream(redis, keyspace.triggers)
    assert (entry.data["userId"], entry.data["screenId"]) == ("ops", "screen-3")


@pytest.mark.parametrize(
    ("skew_s", "code"),
    [
        pytest.param(-301, "REQUEST_EXPIRED", id="301-s-old"),
        pytest.param(+301, "REQUEST_EXPIRED", id="301-s-ahead"),
        pytest.param(-290, None, id="290-s-old"),
        pytest.param(+290, None, id="290-s-ahead"),
    ],
)
async def test_request_window_is_300_s_both_ways(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace, skew_s: int, code: str | None
) -> None:
    controller = await connect(edge.url, mint())
    try:
        payload = trigger_payload(timestamp=int(time.time() * 1000) + skew_s * 1000)
        ack = await controller.emit("trigger", payload)
    finally:
        await controller.sio.disconnect()
    assert ack.get("code") == code, ack
    assert await redis.xlen(keyspace.triggers) == (0 if code else 1)


async def test_request_window_edge_is_exactly_300_000_ms(
    edge_settings: Settings, redis: Redis, keyspace: Keyspace
) -> None:
    # The desk with its clock stopped at `now`: |now - timestamp| > 300 s is refused, 300 s
    # itself is not (SPEC 4). No worker runs: admitted triggers answer PENDING.
    now = 1_800_000_000_000
    settings = msgspec.structs.replace(edge_settings, ack_timeout_ms=50)
    batcher = PipelineBatcher(redis)
    desk = TriggerDesk(
        redis=redis,
        partitions=Partitions(keyspace.prefix),
        settings=settings,
        edge_id="edge-test",
        batcher=batcher,
        clock_ms=lambda: now,
    )
    claims = AccessClaims(
        user_id="user-1", screen_id="screen-1", role="controller", jti="j", iat=0, exp=2**40
    )
    codes = {}
    for delta in (-300_001, -300_000, 300_000, 300_001):
        ack = await desk.submit(claims, trigger_payload(timestamp=now + delta))
        codes[delta] = ack["code"]
    assert codes == {
        -300_001: "REQUEST_EXPIRED",
        -300_000: "PENDING",
        300_000: "PENDING",
        300_001: "REQUEST_EXPIRED",
    }


async def test_idempotency_lasts_one_hour(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    controller = await connect(edge.url, mint())
    try:
        payload = trigger_payload()
        ack = await controller.emit("trigger", payload)
    finally:
        await controller.sio.disconnect()
    assert ack["success"] is True
    record = result_key(keyspace, "user-1", payload["id"])
    # SPEC 4: the same id from the same user within 1 hour is never appended twice.
    assert 3600 - 60 <= await redis.ttl(record) <= 3600


async def test_window_id_is_stable_per_screen_and_display_index(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    here = await connect(edge.url, mint())
    there = await connect(edge.url, mint(user="user-2", screen="screen-2"))
    try:
        windows: dict[tuple[str, int], set[str]] = {}
        for client, name in ((here, "s1"), (there, "s2")):
            for index in (0, 0, 1):
                ack = await client.emit("trigger", trigger_payload(displayIndex=index))
                assert ack["success"] is True, ack
                windows.setdefault((name, index), set()).add(ack["data"]["windowId"])
    finally:
        await here.sio.disconnect()
        await there.sio.disconnect()
    assert all(len(ids) == 1 and "" not in ids for ids in windows.values()), windows
    assert len({next(iter(ids)) for ids in windows.values()}) == 4  # one per (screen, index)


async def test_a_trigger_processed_after_a_newer_one_is_acked_superseded(
    edge_settings: Settings, redis: Redis, keyspace: Keyspace
) -> None:
    async with running_edge(edge_settings) as running:  # no worker: the test projects
        screen = await connect(running.url, mint(role="screen"))
        controller = await connect(running.url, mint())
        try:
            older, newer = trigger_payload("OLDER"), trigger_payload("NEWER")
            first = asyncio.ensure_future(controller.emit("trigger", older))

            async def appended(count: int) -> bool:
                return int(await redis.xlen(keyspace.triggers)) == count

            await wait_until(lambda: appended(1))
            second = asyncio.ensure_future(controller.emit("trigger", newer))
            await wait_until(lambda: appended(2))
            # A worker takes both and projects the newer entry first (as a reclaim would).
            await redis.xgroup_create(keyspace.triggers, "projector", id="0")
            reply = await redis.xreadgroup("projector", "w-1", {keyspace.triggers: ">"})
            deliveries = [Delivery(i.decode(), f, 1) for i, f in reply[0][1]]
            projector = Projector(
                redis=redis,
                keyspace=keyspace,
                resolver=TemplateResolver("/d/{orderId}"),
                group="projector",
                maxlen=10_000,
            )
            for delivery in reversed(deliveries):
                result = await projector.process([delivery])
                await projector.commit(result.commits, [])
            newer_ack, older_ack = await second, await first
            [display] = await screen.wait_for("display")
            await asyncio.sleep(0.3)  # a display of the older one would have arrived by now
        finally:
            await screen.sio.disconnect()
            await controller.sio.disconnect()
    assert newer_ack["data"]["superseded"] is False
    assert older_ack["success"] is True
    assert older_ack["data"]["superseded"] is True
    assert older_ack["data"]["orderId"] == "OLDER"
    assert len(screen.received["display"]) == 1
    assert display["orderId"] == "NEWER"
    projection = await redis.hgetall(screen_key(keyspace, "screen-1"))
    assert msgspec.json.decode(projection[b"data"])["orderId"] == "NEWER"


async def test_stream_maxlen_bounds_every_stream(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        STREAM_MAXLEN="100",
        RATE_LIMIT_MAX_REQUESTS="100000",
    )
    await workers.start(settings)
    async with running_edge(settings) as running:
        controller = await connect(running.url, mint())
        try:
            acks = await asyncio.gather(
                *(controller.emit("trigger", trigger_payload(f"M-{i}")) for i in range(600))
            )
        finally:
            await controller.sio.disconnect()
    assert all(ack["success"] for ack in acks)
    for stream in (keyspace.triggers, keyspace.events):
        info = await redis.xinfo_stream(stream)
        assert info["entries-added"] == 600
        # XADD MAXLEN ~ 100 trims whole nodes of the stream (100 entries each by default): the
        # stream keeps at least 100 and less than one node more.
        assert 100 <= info["length"] < 100 + 100, (stream, info["length"])
