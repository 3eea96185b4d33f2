"""Rolling upgrades on the edge: events of a newer v1 worker still answer the controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from services.config.settings import Settings
from streams.keys import Keyspace
from tests.edge_helpers import RunningEdge, connect, mint, running_edge, trigger_payload
from tests.helpers import now_ms, read_stream, wait_until


@pytest.fixture
async def lone_edge(edge_settings: Settings) -> AsyncIterator[RunningEdge]:
    """An edge with no worker: the test writes the events a newer worker would."""
    async with running_edge(edge_settings) as running:
        yield running


async def _admitted(
    redis: Redis, keyspace: Keyspace, trigger_id: str
) -> tuple[str, dict[str, Any]]:
    """The `rd:triggers` entry of a trigger, once the edge appended it."""

    async def find() -> list[Any]:
        entries = await read_stream(redis, keyspace.triggers)
        return [e for e in entries if e.data.get("id") == trigger_id]

    async def appended() -> bool:
        return bool(await find())

    await wait_until(appended)
    [entry] = await find()
    return entry.id, entry.data


async def test_events_with_fields_of_a_newer_worker_answer_and_display(
    lone_edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    screen = await connect(lone_edge.url, mint(role="screen"))
    controller = await connect(lone_edge.url, mint())
    try:
        projected, rejected = trigger_payload("NEW-1"), trigger_payload("NEW-2")
        first = asyncio.ensure_future(controller.emit("trigger", projected))
        second = asyncio.ensure_future(controller.emit("trigger", rejected))
        entry_id, data = await _admitted(redis, keyspace, projected["id"])
        _, other = await _admitted(redis, keyspace, rejected["id"])
        identity = {
            "triggerId": data["id"],
            "userId": data["userId"],
            "screenId": data["screenId"],
            "orderId": data["orderId"],
            "displayIndex": data["displayIndex"],
            "triggerEntryId": entry_id,
            "timestamp": data["timestamp"],
            "receivedAt": data["receivedAt"],
        }
        event = identity | {
            "windowId": "screen-1#0",
            "documentUrl": "/documents/NEW-1.pdf",
            "projectedAt": now_ms(),
            "deliveries": 1,
            "superseded": False,
            "cacheHit": True,  # a field this edge does not know
        }
        event_id = await redis.xadd(
            keyspace.events,
            {
                "type": "trigger.projected",
                "v": "1",
                "data": msgspec.json.encode(event),
                "origin": "worker-v2",  # an entry field this edge does not know
            },
        )
        refusal = {
            "triggerId": other["id"],
            "userId": other["userId"],
            "code": "ORDER_ARCHIVED",  # a code this edge does not know
            "message": "order archived",
        }
        await redis.xadd(
            keyspace.events,
            {"type": "trigger.rejected", "v": "1", "data": msgspec.json.encode(refusal)},
        )

        ack = await first
        assert ack["success"] is True, ack
        assert ack["data"]["eventId"] == event_id.decode()
        assert ack["data"]["documentUrl"] == "/documents/NEW-1.pdf"
        [display] = await screen.wait_for("display")
        assert display["eventId"] == event_id.decode()
        refused = await second
        assert refused == {
            "id": rejected["id"],
            "success": False,
            "code": "ORDER_ARCHIVED",
            "error": "order archived",
        }
    finally:
        await screen.sio.disconnect()
        await controller.sio.disconnect()
