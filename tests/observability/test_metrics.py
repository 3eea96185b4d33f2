"""/metrics in Prometheus text format: SPEC section 7's names, moving with traffic."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from observability.metrics import Metrics
from services.config.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import append_trigger, trigger, wait_until

NAMES = {
    "rd_triggers",
    "rd_trigger_ack_seconds",
    "rd_stream_pending",
    "rd_stream_lag",
    "rd_dead_letter",
    "rd_connections",
    "rd_circuit_state",
    "rd_redeliveries",
}


async def _scrape(url: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_move_with_traffic(
    make_settings: SettingsFactory, workers: WorkerRunner, order_service: OrderService
) -> None:
    settings: Settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        ORDER_API_URL=order_service.url,
        MAX_DELIVERIES="2",
        RETRY_BASE_MS="50",
        RETRY_MAX_MS="100",
    )
    metrics = Metrics()  # shared by edge and worker, as in `rdisplay serve`
    await workers.start(settings, metrics=metrics)
    order_service.fail_next["flaky"] = 1
    order_service.fail_next["doomed"] = 10
    async with running_edge(settings, metrics=metrics) as edge:
        before = await _scrape(edge.url)
        assert set(before) >= NAMES
        controller = await connect(edge.url, mint())
        screen = await connect(edge.url, mint(role="screen"))
        try:
            codes = []
            for order in ("ok-1", "ok-2", "flaky", "missing-1", "doomed"):
                ack = await controller.emit("trigger", trigger_payload(order))
                codes.append("OK" if ack["success"] else ack["code"])
            bad = await controller.emit("trigger", {"nonsense": True})
            assert bad["code"] == "VALIDATION_ERROR"
            after = await _scrape(edge.url)
        finally:
            await controller.sio.disconnect()
            await screen.sio.disconnect()
    assert codes == ["OK", "OK", "OK", "ORDER_NOT_FOUND", "DEAD_LETTERED"]
    triggers = after["rd_triggers"]
    assert triggers[("rd_triggers_total", (("outcome", "projected"),))] == 3
    assert triggers[("rd_triggers_total", (("outcome", "order_not_found"),))] == 1
    assert triggers[("rd_triggers_total", (("outcome", "dead_lettered"),))] == 1
    assert triggers[("rd_triggers_total", (("outcome", "validation_error"),))] == 1
    ack = after["rd_trigger_ack_seconds"]
    assert ack[("rd_trigger_ack_seconds_count", ())] == 6
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in ack.items()
        if name == "rd_trigger_ack_seconds_bucket"
    )
    assert buckets[-1] == (float("inf"), 6.0)
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    # "flaky" and "doomed" waited for a retry (RETRY_BASE_MS 50 ms) before their answer:
    # at least two samples lie above 50 ms, and the sum holds at least those two waits.
    assert dict(buckets)[0.05] <= 4
    assert ack[("rd_trigger_ack_seconds_sum", ())] >= 2 * 0.05
    assert after["rd_dead_letter"][("rd_dead_letter_total", ())] == 1
    # One redelivery each for "flaky" (then projected) and "doomed" (then dead-lettered).
    assert after["rd_redeliveries"][("rd_redeliveries_total", ())] == 2
    connections = after["rd_connections"]
    assert connections[("rd_connections", (("role", "controller"),))] == 1
    assert connections[("rd_connections", (("role", "screen"),))] == 1
    circuit = after["rd_circuit_state"]
    assert circuit[("rd_circuit_state", (("name", "order-api"),))] == 0
    labels = (("group", "projector"), ("stream", settings.stream_prefix + ":triggers"))
    assert after["rd_stream_pending"][("rd_stream_pending", labels)] == 0
    assert after["rd_stream_lag"][("rd_stream_lag", labels)] == 0


async def test_lag_and_pending_follow_the_stream(
    make_settings: SettingsFactory, workers: WorkerRunner, redis: Redis, keyspace: Keyspace
) -> None:
    settings: Settings = make_settings(JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET)
    labels = (("group", "projector"), ("stream", keyspace.triggers))
    await redis.xgroup_create(keyspace.triggers, "projector", id="0", mkstream=True)
    for i in range(7):
        await append_trigger(redis, keyspace, trigger(order_id=f"lag-{i}"))
    # Three read by a consumer that then died: pending, no longer lag.
    await redis.xreadgroup("projector", "gone-1", {keyspace.triggers: ">"}, count=3)
    async with running_edge(settings) as edge:
        waiting = await _scrape(edge.url)
        health = await _health(edge.url)
        assert waiting["rd_stream_lag"][("rd_stream_lag", labels)] == 4
        assert waiting["rd_stream_pending"][("rd_stream_pending", labels)] == 3
        assert health["streams"] == {"lag": 4, "pending": 3, "deadLetter": 0}

        await workers.start(settings)  # takes the four new ones; reclaims the three

        async def drained() -> bool:
            streams: dict[str, int] = (await _health(edge.url))["streams"]
            return streams == {"lag": 0, "pending": 0, "deadLetter": 0}

        await wait_until(drained, timeout=20)
        done = await _scrape(edge.url)
        assert done["rd_stream_lag"][("rd_stream_lag", labels)] == 0
        assert done["rd_stream_pending"][("rd_stream_pending", labels)] == 0


async def _health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body
