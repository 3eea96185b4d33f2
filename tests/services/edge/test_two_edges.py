"""Two edge processes' worth of edges on one event log: each client gets what it should, once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import socketio
from redis.asyncio import Redis

from services.config.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    connect,
    mint,
    refused,
    running_edge,
    trigger_payload,
)
from tests.helpers import free_port, read_stream, wait_for_port, wait_until

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


async def test_controller_on_one_edge_screen_on_the_other(
    edge_settings: Settings, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as a, running_edge(edge_settings) as b:
        controller = await connect(a.url, mint())
        screen_b = await connect(b.url, mint(role="screen"))
        other_screen = await connect(a.url, mint(user="u9", screen="screen-9", role="screen"))
        try:
            acks = [await controller.emit("trigger", trigger_payload(f"o-{i}")) for i in range(5)]
            assert all(ack["success"] for ack in acks)
            displays = await screen_b.wait_for("display", 5)
            await asyncio.sleep(0.3)
            assert [d["eventId"] for d in displays] == [a["data"]["eventId"] for a in acks]
            assert "display" not in other_screen.received

            async def all_acknowledged() -> bool:
                events = await read_stream(redis, keyspace.events)
                return [e.type for e in events].count("display.acknowledged") >= 5

            await wait_until(all_acknowledged)
            await asyncio.sleep(0.3)
            events = await read_stream(redis, keyspace.events)
            assert [e.type for e in events].count("display.acknowledged") == 5
        finally:
            for client in (controller, screen_b, other_screen):
                await client.sio.disconnect()


async def test_result_after_pending_reaches_the_controller_on_another_edge(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="300"
    )
    async with running_edge(settings) as a, running_edge(settings) as b:  # no worker yet
        token = mint()
        first = await connect(a.url, token)
        payload = trigger_payload("MOVED")
        ack = await first.emit("trigger", payload)
        assert ack["code"] == "PENDING"
        await first.sio.disconnect()
        moved = await connect(b.url, token)  # the same controller, now on the other edge
        bystander = await connect(b.url, mint(user="u9", screen="screen-9"))
        try:
            await workers.start(settings)
            [result] = await moved.wait_for("trigger:result")
            assert result["id"] == payload["id"]
            assert result["success"] is True
            assert result["data"]["orderId"] == "MOVED"
            await asyncio.sleep(0.3)
            assert len(moved.received["trigger:result"]) == 1
            assert "trigger:result" not in bystander.received
            [event] = await read_stream(redis, keyspace.events)
            assert event.fields.get("answeredPending") == "1"
        finally:
            await moved.sio.disconnect()
            await bystander.sio.disconnect()


async def test_no_mark_when_the_ack_came_in_time(
    edge_settings: Settings, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as a, running_edge(edge_settings) as b:
        controller = await connect(a.url, mint())
        watcher = await connect(b.url, mint())  # the same user on the other edge
        try:
            ack = await controller.emit("trigger", trigger_payload("IN-TIME"))
            assert ack["success"] is True
            await asyncio.sleep(0.3)
            assert "trigger:result" not in controller.received
            assert "trigger:result" not in watcher.received
            [event] = await read_stream(redis, keyspace.events)
            assert "answeredPending" not in event.fields
        finally:
            await controller.sio.disconnect()
            await watcher.sio.disconnect()


async def test_screen_ends_on_latest_display_after_its_edge_restarts(
    edge_settings: Settings, workers: WorkerRunner
) -> None:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as a:
        controller = await connect(a.url, mint())
        try:
            async with running_edge(edge_settings) as b:
                screen = await connect(b.url, mint(role="screen"))
                first = await controller.emit("trigger", trigger_payload("FIRST"))
                [shown] = await screen.wait_for("display")
                assert shown["eventId"] == first["data"]["eventId"]
            # Edge b is gone (the screen lost its connection); scans go on at edge a.
            await screen.sio.disconnect()
            latest = None
            for i in range(3):
                latest = await controller.emit("trigger", trigger_payload(f"WHILE-DOWN-{i}"))
            assert latest is not None
            async with running_edge(edge_settings) as b_again:
                back = await connect(
                    b_again.url, mint(role="screen"), last_event_id=shown["eventId"]
                )
                try:
                    [recovered] = await back.wait_for("display")
                    assert recovered["eventId"] == latest["data"]["eventId"]
                    assert recovered["orderId"] == "WHILE-DOWN-2"
                    await asyncio.sleep(0.3)
                    assert len(back.received["display"]) == 1
                finally:
                    await back.sio.disconnect()
        finally:
            await controller.sio.disconnect()


@pytest.mark.slow
async def test_screen_reconnecting_to_a_killed_and_restarted_edge_process(
    edge_settings: Settings,
    workers: WorkerRunner,
    redis_url: str,
    keyspace: Keyspace,
    tmp_path: Path,
) -> None:
    await workers.start(edge_settings)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": keyspace.prefix,
        "SOCKET_IO_PORT": str(port),
        "JWT_SECRET": ACCESS_SECRET,
        "JWT_REFRESH_SECRET": REFRESH_SECRET,
        "LOG_LEVEL": "warning",
    }

    async def start_edge() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            RDISPLAY, "edge", env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_for_port(port, timeout=20)
        return process

    process = await start_edge()
    url = f"http://127.0.0.1:{port}"
    displays: list[dict[str, str]] = []
    screen = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2)

    @screen.on("display")
    async def on_display(data: dict[str, str]) -> dict[str, str]:
        displays.append(data)
        return {"status": "shown"}

    async with running_edge(edge_settings) as other:
        controller = await connect(other.url, mint())
        try:
            await screen.connect(url, auth={"token": mint(role="screen")}, transports=["websocket"])
            first = await controller.emit("trigger", trigger_payload("BEFORE-KILL"))

            async def got_first() -> bool:
                return any(d["eventId"] == first["data"]["eventId"] for d in displays)

            await wait_until(got_first)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            latest = await controller.emit("trigger", trigger_payload("WHILE-KILLED"))
            assert latest["success"] is True
            process = await start_edge()

            async def got_latest() -> bool:
                return bool(displays) and displays[-1]["eventId"] == latest["data"]["eventId"]

            await wait_until(got_latest, timeout=20)
        finally:
            await screen.disconnect()
            await controller.sio.disconnect()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 10) == 0


async def _connects(url: str, token: str) -> str:
    """`ok` when the edge takes the connection (then closes it), else the refusal."""
    try:
        client = await connect(url, token)
    except socketio.exceptions.ConnectionError:
        return await refused(url, token)
    await client.sio.disconnect()
    return "ok"


async def test_connections_are_rate_limited_per_identity_across_edges(
    make_settings: SettingsFactory, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        RATE_LIMIT_MAX_REQUESTS="3",
        RATE_LIMIT_WINDOW="60000",
    )
    async with running_edge(settings) as a, running_edge(settings) as b:
        token = mint(role="screen")
        attempts = [await _connects(url, token) for url in (a.url, b.url, a.url, b.url, a.url)]
        assert attempts == ["ok", "ok", "ok", "RATE_LIMITED", "RATE_LIMITED"]
        # Another identity of the same user is counted on its own.
        assert await _connects(b.url, mint(role="screen", screen="screen-2")) == "ok"
        assert await _connects(a.url, mint(role="controller")) == "ok"


async def test_rate_limits_start_again_with_the_next_window(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        RATE_LIMIT_MAX_REQUESTS="2",
        RATE_LIMIT_WINDOW="1500",
    )
    await workers.start(settings)
    async with running_edge(settings) as a, running_edge(settings) as b:
        first, second = await connect(a.url, mint()), await connect(b.url, mint())
        try:
            acks = [
                await client.emit("trigger", trigger_payload())
                for client in (first, second, first, second)
            ]
            # One window shared by both edges: two accepted, then refused on either edge.
            assert [ack.get("code", "OK") for ack in acks] == [
                "OK",
                "OK",
                "RATE_LIMITED",
                "RATE_LIMITED",
            ]
            window_keys = [k async for k in redis.scan_iter(match=f"{keyspace.prefix}:rate:*")]
            assert len(window_keys) == 1
            assert 0 < await redis.pttl(window_keys[0]) <= 1500  # RATE_LIMIT_WINDOW

            async def window_over() -> bool:
                return not await redis.exists(*window_keys)

            await wait_until(window_over, timeout=10)  # the window is RATE_LIMIT_WINDOW long
            again = [await client.emit("trigger", trigger_payload()) for client in (second, first)]
            assert [ack.get("code", "OK") for ack in again] == ["OK", "OK"]
            assert await redis.xlen(keyspace.triggers) == 4
        finally:
            await first.sio.disconnect()
            await second.sio.disconnect()
