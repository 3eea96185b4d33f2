"""Presence (issue 16, step 1): edges, workers and screens online across edges, offline at once
on a clean disconnect and within `TTL_MS` of an edge's SIGKILL; nothing else refreshes it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.config.settings import Settings
from services.runtime.presence import BEAT_S, TTL_MS, read_presence
from streams.keys import Keyspace
from tests.conftest import WorkerRunner
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, connect, mint, refused, running_edge
from tests.helpers import free_port, wait_for_port, wait_until

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


async def test_screens_are_online_on_any_edge_and_offline_when_they_leave(
    edge_settings: Settings, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    worker = await workers.start(edge_settings, name="present")
    async with running_edge(edge_settings) as one, running_edge(edge_settings) as two:
        a_here = await connect(one.url, mint("kiosk-a", "screen-a", "screen"))
        a_there = await connect(two.url, mint("kiosk-a2", "screen-a", "screen"))
        b = await connect(two.url, mint("kiosk-b", "screen-b", "screen"))
        controller = await connect(one.url, mint("user-c", "screen-c"))  # not a screen
        await refused(two.url, mint("kiosk-d", "screen-d", "screen", secret="wrong" * 10))
        try:
            now = await read_presence(redis, keyspace)
            assert set(now.edges) == {one.edge.edge_id, two.edge.edge_id}
            assert any(name.startswith("present-") for name in now.workers)
            assert set(now.screens) == {"screen-a", "screen-b"}
            assert set(now.screens["screen-a"]) == {one.edge.edge_id, two.edge.edge_id}
            for expires in (*now.edges.values(), *now.screens["screen-b"].values()):
                assert 0 < expires - time.time() * 1000 <= TTL_MS

            await b.sio.disconnect()
            await a_there.sio.disconnect()

            async def left() -> bool:
                screens = (await read_presence(redis, keyspace)).screens
                return "screen-b" not in screens and set(screens["screen-a"]) == {one.edge.edge_id}

            await wait_until(left, timeout=2)  # at once, not after the expiry
        finally:
            for client in (a_here, controller):
                await client.sio.disconnect()
    await workers.stop(worker)
    after = await read_presence(redis, keyspace)  # stopped cleanly: gone at once
    assert (after.edges, after.workers, after.screens) == ({}, {}, {})


@pytest.mark.slow
async def test_an_edge_sigkilled_takes_its_screens_offline_within_the_bound(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": keyspace.prefix,
        "SOCKET_IO_PORT": str(port),
        "DATA_DIR": str(tmp_path / "var"),
        "JWT_SECRET": ACCESS_SECRET,
        "JWT_REFRESH_SECRET": REFRESH_SECRET,
        "LOG_LEVEL": "warning",
    }
    edge = await asyncio.create_subprocess_exec(
        RDISPLAY,
        "edge",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port, timeout=30)
        screen = await connect(f"http://127.0.0.1:{port}", mint("kiosk-k", "screen-k", "screen"))
        assert "screen-k" in (await read_presence(redis, keyspace)).screens
        await asyncio.sleep(BEAT_S + 0.5)  # a beat renewed it
        edge.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await edge.wait()

        async def offline() -> bool:
            return "screen-k" not in (await read_presence(redis, keyspace)).screens

        await wait_until(offline, timeout=TTL_MS / 1000 + 2)
        took = time.monotonic() - killed
        print(f"screen offline {took:.1f} s after its edge was SIGKILLed (bound {TTL_MS} ms)")
        assert took <= TTL_MS / 1000 + 0.5
        assert (await read_presence(redis, keyspace)).edges == {}
        await screen.sio.disconnect()
    finally:
        if edge.returncode is None:
            edge.kill()
            await edge.wait()
