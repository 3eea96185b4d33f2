"""The operator's feed over Socket.IO (issue 16): admin-only snapshot and pushed changes,
dead-letter show and redrive, resend across edges, pairings waiting, the chart."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import socketio
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from services.config.settings import Settings
from services.edge import operator
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    Client,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import fast_failures, read_stream, wait_until


async def _operator(url: str) -> tuple[Client, dict[str, Any], list[dict[str, Any]]]:
    """An admin's socket subscribed to the feed: its snapshot and the updates it gets."""
    admin = await connect(url, mint("ops", "ops", "admin"))
    updates: list[dict[str, Any]] = []

    @admin.sio.on("operator:update")
    async def on_update(data: dict[str, Any]) -> None:
        updates.append(data)

    answer = await admin.emit("operator:subscribe", {})
    assert answer["success"] is True, answer
    return admin, answer["snapshot"], updates


def _latest(updates: list[dict[str, Any]], section: str) -> Any:
    for update in reversed(updates):
        if section in update:
            return update[section]
    return None


async def test_only_an_admin_gets_the_feed_or_acts(edge_settings: Settings) -> None:
    async with running_edge(edge_settings) as edge:
        for role in ("controller", "screen"):
            client = await connect(edge.url, mint(role=role))
            try:
                for event, payload in (
                    ("operator:subscribe", {}),
                    ("operator:redrive", {"all": True}),
                    ("operator:resend", {"screenId": "screen-1"}),
                    ("operator:dead-letter", {"id": "1-0"}),
                ):
                    answer = await client.emit(event, payload)
                    assert answer["success"] is False
                    assert answer["code"] == "FORBIDDEN", (role, event, answer)
            finally:
                await client.sio.disconnect()
        admin = await connect(edge.url, mint("ops", "ops", "admin"))
        try:
            bad: list[dict[str, object]] = [
                {},
                {"id": "nope"},
                {"id": 5},
                {"id": "1-0", "partition": 7},
            ]
            for one in bad:
                answer = await admin.emit("operator:dead-letter", one)
                assert answer["code"] == "VALIDATION_ERROR", (one, answer)
            answer = await admin.emit("operator:resend", {"screenId": ""})
            assert answer["code"] == "VALIDATION_ERROR"
        finally:
            await admin.sio.disconnect()


async def test_snapshot_then_changes_across_two_edges(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings = make_settings(JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET)
    await workers.start(settings)
    async with running_edge(settings) as a, running_edge(settings) as b:
        screen = await connect(b.url, mint("kiosk", "shop-1", "screen"))
        controller = await connect(b.url, mint("user-1", "shop-1"))
        admin, snapshot, updates = await _operator(a.url)
        try:
            rows = {row["screenId"]: row for row in snapshot["screens"]}
            assert rows["shop-1"]["online"] is True
            assert rows["shop-1"]["edges"] == [b.edge.edge_id]
            assert {edge["id"] for edge in snapshot["edges"]} == {a.edge.edge_id, b.edge.edge_id}
            for edge in snapshot["edges"]:
                assert edge["startedAt"] > 0
            [worker] = snapshot["workers"]
            assert worker["startedAt"] > 0
            assert worker["partitions"] == [0]
            [stream] = snapshot["streams"]
            assert stream["stream"] == keyspace.triggers
            assert snapshot["deadLetters"] == []
            assert len(snapshot["chart"]) == 300
            assert snapshot["tickMs"] == 2000

            ack = await controller.emit("trigger", trigger_payload("ORD-1"))
            assert ack["success"] is True
            event_id = ack["data"]["eventId"]

            async def shown() -> bool:
                screens = _latest(updates, "screens") or []
                row: dict[str, Any] = next((r for r in screens if r["screenId"] == "shop-1"), {})
                return row.get("eventId") == event_id and row.get("displayStatus") == "shown"

            await wait_until(shown, timeout=10)
            row = next(r for r in _latest(updates, "screens") if r["screenId"] == "shop-1")
            assert row["orderId"] == "ORD-1"
            assert row["displayAckedAt"] > 0

            def chart() -> dict[int, dict[str, Any]]:
                """As the page keeps it: each second's newest point (the last seconds come
                again with every update)."""
                return {p["t"]: p for u in updates for p in u.get("chart", [])}

            async def charted() -> bool:
                return bool(sum(p["projected"] for p in chart().values()) == 1)

            await wait_until(charted, timeout=10)
            [point] = [p for p in chart().values() if p["projected"]]
            assert point["p95"] is not None
            assert point["p95"] >= 0

            # A resend from the page on edge a reaches the screen's socket on edge b.
            before = len(screen.received["display"])
            assert (await admin.emit("operator:resend", {"screenId": "shop-1"}))["success"]
            await screen.wait_for("display", before + 1)
            assert screen.received["display"][-1]["eventId"] == event_id

            await screen.sio.disconnect()

            async def offline() -> bool:
                screens = _latest(updates, "screens") or []
                return any(r["screenId"] == "shop-1" and not r["online"] for r in screens)

            await wait_until(offline, timeout=10)  # a clean disconnect: offline at once
        finally:
            for client in (admin, controller, screen):
                await client.sio.disconnect()


async def test_dead_letter_show_and_redrive_from_the_feed(
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis: Redis,
    keyspace: Keyspace,
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        **fast_failures(order_service.url),
    )
    await workers.start(settings)
    order_service.fail_next["ORD-9"] = 1000
    async with running_edge(settings) as edge:
        controller = await connect(edge.url, mint())
        admin, _snapshot, updates = await _operator(edge.url)
        try:
            payload = trigger_payload("ORD-9")
            first = await controller.emit("trigger", payload)
            assert first["code"] == "DEAD_LETTERED"

            async def listed() -> bool:
                return bool(_latest(updates, "deadLetters"))

            await wait_until(listed, timeout=10)
            [row] = _latest(updates, "deadLetters")
            assert row["triggerId"] == payload["id"]
            assert row["reason"] == "max_deliveries"
            assert row["deliveries"] == 2
            [stream] = _latest(updates, "streams")
            assert stream["deadLetter"] == 1

            shown = await admin.emit("operator:dead-letter", {"id": row["id"]})
            assert shown["success"] is True
            assert shown["entry"]["data"]["orderId"] == "ORD-9"
            assert shown["entry"]["partition"] == 0

            order_service.fail_next["ORD-9"] = 0  # the order service recovered
            answer = await admin.emit("operator:redrive", {"id": row["id"]})
            assert answer["success"] is True
            assert [r["id"] for r in answer["redriven"]] == [row["id"]]
            again = await admin.emit("operator:redrive", {"id": row["id"]})
            assert again["code"] == "VALIDATION_ERROR"  # taken: nothing is redriven twice

            [result] = await controller.wait_for("trigger:result")
            assert result["id"] == payload["id"]
            assert result["success"] is True

            async def emptied() -> bool:
                return bool(_latest(updates, "deadLetters") == [])

            await wait_until(emptied, timeout=10)
        finally:
            for client in (admin, controller):
                await client.sio.disconnect()
    events = await read_stream(redis, keyspace.events)
    mine = [e.type for e in events if e.data.get("triggerId") == payload["id"]]
    assert mine == ["trigger.dead_lettered", "trigger.projected"]


async def test_waiting_pairings_are_listed_until_approved(edge_settings: Settings) -> None:
    async with running_edge(edge_settings) as edge, aiohttp.ClientSession() as http:
        async with http.post(f"{edge.url}/api/pair", json={"role": "screen"}) as response:
            assert response.status == 201
            pairing = await response.json()
        admin, snapshot, updates = await _operator(edge.url)
        try:
            [waiting] = snapshot["approvals"]
            assert waiting["codeHint"] == pairing["code"][:3]
            assert waiting["role"] == "screen"
            assert waiting["address"] == "127.0.0.1"
            assert waiting["expiresAt"] == pairing["expiresAt"]
            # Anyone may ask for a pairing: the page never gets a whole code to approve
            # blindly, the operator reads it off the device.
            assert pairing["code"] not in json.dumps(snapshot)
            async with http.post(
                f"{edge.url}/api/pair/approve",
                json={"code": pairing["code"], "screenId": "hall"},
                headers={"Authorization": f"Bearer {mint('ops', 'ops', 'admin')}"},
            ) as response:
                assert response.status == 200

            async def gone() -> bool:
                return bool(_latest(updates, "approvals") == [])

            await wait_until(gone, timeout=10)
        finally:
            await admin.sio.disconnect()


async def test_a_reconnecting_page_gets_a_fresh_snapshot(edge_settings: Settings) -> None:
    async with running_edge(edge_settings) as edge:
        admin, first, _updates = await _operator(edge.url)
        await admin.sio.disconnect()
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            edge.url,
            auth={"token": mint("ops", "ops", "admin")},
            transports=["websocket"],
            wait_timeout=5,
        )
        try:
            answer = await sio.call("operator:subscribe", {}, timeout=10)
            assert answer["success"] is True
            assert answer["snapshot"]["at"] >= first["at"]
            await asyncio.sleep(0)
        finally:
            await sio.disconnect()


async def test_redrive_all_moves_a_bounded_batch_and_says_what_remains(
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis: Redis,
    keyspace: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operator, "REDRIVE_ALL_MAX", 2)
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        ORDER_API_URL=order_service.url,
        MAX_DELIVERIES="1",
    )
    await workers.start(settings)
    async with running_edge(settings) as edge:
        controller = await connect(edge.url, mint())
        admin, _snapshot, _updates = await _operator(edge.url)
        try:
            for n in range(3):
                order_service.fail_next[f"ORD-{n}"] = 1000
                ack = await controller.emit("trigger", trigger_payload(f"ORD-{n}"))
                assert ack["code"] == "DEAD_LETTERED"
            dead = [e.id for e in await read_stream(redis, keyspace.dead_letter)]
            first = await admin.emit("operator:redrive", {"all": True})
            assert [r["id"] for r in first["redriven"]] == dead[:2]  # oldest first
            assert first["remaining"] == 1
            second = await admin.emit("operator:redrive", {"all": True})
            # The first two may have failed again by now (the order service still fails): if
            # so they are dead letters again, newer than the third. The oldest goes first.
            assert second["redriven"][0]["id"] == dead[2]
        finally:
            for client in (admin, controller):
                await client.sio.disconnect()
