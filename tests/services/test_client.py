"""The Python client library against a real edge and worker."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.client import Controller, Screen
from services.config.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, RunningEdge, mint, running_edge
from tests.helpers import read_stream, wait_until


async def test_trigger_display_and_recovery(
    edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    screen = Screen(edge.url, mint(role="screen"))
    controller = Controller(edge.url, mint())
    await screen.connect()
    await controller.connect()
    try:
        ack = await controller.trigger("A-1")
        assert ack["success"] is True
        await asyncio.wait_for(screen.changed.wait(), 5)
        assert screen.current is not None
        assert screen.current["eventId"] == ack["data"]["eventId"]
        # The screen goes away; two more scans; it comes back and is sent the newest only.
        await screen.close()
        await controller.trigger("A-2")
        latest = await controller.trigger("A-3")
        screen.changed.clear()
        await screen.connect()
        await asyncio.wait_for(screen.changed.wait(), 5)
        await asyncio.sleep(0.2)
        assert screen.current is not None
        assert screen.current["eventId"] == latest["data"]["eventId"]
        assert [d["orderId"] for d in screen.displays] == ["A-1", "A-3"]
    finally:
        await screen.close()
        await controller.close()


async def test_pending_is_retried_with_the_same_id(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings: Settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="200"
    )
    async with running_edge(settings) as edge:
        controller = Controller(edge.url, mint(), ack_timeout=0.3)
        await controller.connect()
        try:
            pending = asyncio.create_task(controller.trigger("LATE", deadline=20))
            await asyncio.sleep(0.8)  # several PENDING answers and re-sends meanwhile
            assert not pending.done()
            await workers.start(settings)
            ack = await asyncio.wait_for(pending, 10)
            assert ack["success"] is True
        finally:
            await controller.close()
    entries = [e for e in await read_stream(redis, keyspace.triggers) if e.type == "trigger"]
    assert len(entries) == 1  # re-sends of one id are appended once


async def test_token_is_refreshed_before_expiry(edge: RunningEdge) -> None:
    minted: list[int] = []

    def provider() -> str:
        minted.append(1)
        return mint(ttl=62 if len(minted) == 1 else 900)

    controller = Controller(edge.url, provider)
    await controller.connect()
    try:

        async def refreshed() -> bool:
            return controller.refreshes == 1

        await wait_until(refreshed, timeout=5)
        ack = await controller.trigger("R-1")
        assert ack["success"] is True
    finally:
        await controller.close()
