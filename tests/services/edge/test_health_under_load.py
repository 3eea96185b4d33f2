"""SPEC 5: `GET /health` answers within 1 s, also under load (a real `rdisplay serve`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from streams.keys import Keyspace
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, Client, connect, mint, trigger_payload
from tests.helpers import free_port, wait_for_port
from tests.services.cli.test_cli import ServeProcess

CONTROLLERS = 20
PER_CONTROLLER_PER_S = 10  # 200 triggers/s: well inside what serve sustains on 2 cores
SECONDS = 6


@pytest.mark.slow
async def test_health_answers_within_1_s_under_load(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    port = free_port()
    serve = await ServeProcess.start(
        tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        SOCKET_IO_PORT=str(port),
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        RATE_LIMIT_MAX_REQUESTS="100000",
    )
    url = f"http://127.0.0.1:{port}"
    clients: list[Client] = []
    try:
        await serve.wait_for_log("Application startup complete.", timeout=30)
        await wait_for_port(port)
        clients = [
            await connect(url, mint(user=f"load-{i}", screen=f"s-{i}")) for i in range(CONTROLLERS)
        ]
        screens = [
            await connect(url, mint(user=f"load-{i}", screen=f"s-{i}", role="screen"))
            for i in range(CONTROLLERS)
        ]
        clients += screens
        acks: list[dict[str, object]] = []
        deadline = time.monotonic() + SECONDS

        async def controller(client: Client) -> None:
            while time.monotonic() < deadline:
                acks.append(await client.emit("trigger", trigger_payload(), timeout=30))
                await asyncio.sleep(1 / PER_CONTROLLER_PER_S)

        load = [asyncio.create_task(controller(c)) for c in clients[:CONTROLLERS]]
        answered: list[float] = []
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(1)  # the load is on
            while time.monotonic() < deadline:
                started = time.monotonic()
                async with session.get(f"{url}/health") as response:
                    body = await response.json()
                answered.append(time.monotonic() - started)
                assert response.status == 200, body
                await asyncio.sleep(0.1)
        await asyncio.gather(*load)
    finally:
        for client in clients:
            await client.sio.disconnect()
        await serve.terminate(timeout=15)
        await serve.kill()
    assert len(acks) >= CONTROLLERS * PER_CONTROLLER_PER_S * (SECONDS - 1) // 2
    assert all(ack["success"] for ack in acks)
    assert len(answered) >= 20
    # The bound is SPEC's own, measured as the client sees it: no slack needed, since at
    # this load an answer takes milliseconds and the edge bounds its Redis reads at 0.8 s.
    assert max(answered) < 1.0, sorted(answered)[-5:]
