"""Where orders come from (SPEC 3 and 6): the HTTP order service, ORDERS_FILE, the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from services.config.settings import Settings
from services.worker.orders import HttpOrderResolver, build_resolver
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import append_trigger, free_port, trigger, wait_for_events


async def test_the_order_api_token_is_sent_as_a_bearer_header(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    await workers.start(
        make_settings(ORDER_API_URL=order_service.url, ORDER_API_TOKEN="s3cret-token")
    )
    await append_trigger(redis, keyspace, trigger(order_id="T-1"))
    await wait_for_events(redis, keyspace, 1)
    assert order_service.tokens == ["Bearer s3cret-token"]


async def test_no_token_no_authorization_header(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    await workers.start(make_settings(ORDER_API_URL=order_service.url))
    await append_trigger(redis, keyspace, trigger(order_id="T-2"))
    await wait_for_events(redis, keyspace, 1)
    assert order_service.tokens == [None]


async def test_the_order_id_is_one_percent_encoded_path_segment(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
) -> None:
    await workers.start(make_settings(ORDER_API_URL=order_service.url))
    order_id = "A/B C?x=1#frag%2F..ü"
    await append_trigger(redis, keyspace, trigger(order_id=order_id))
    [event] = await wait_for_events(redis, keyspace, 1)
    assert order_service.raw_paths == ["/orders/A%2FB%20C%3Fx%3D1%23frag%252F..%C3%BC"]
    assert list(order_service.requests) == [order_id]  # the service decodes the same id
    assert event.type == "trigger.projected"
    assert event.data["documentUrl"] == f"/docs/{order_id}.pdf"  # documentPath, unchanged


async def test_connection_refused_is_a_transient_failure(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    await workers.start(make_settings(ORDER_API_URL=closed, MAX_DELIVERIES="3"))
    await append_trigger(redis, keyspace, trigger(order_id="R-1"))
    [event] = await wait_for_events(redis, keyspace, 1)
    # Retried, not rejected: after MAX_DELIVERIES it is dead-lettered.
    assert event.type == "trigger.dead_lettered"
    assert event.data["deliveries"] == 3
    assert "unreachable" in event.data["message"]


@pytest.mark.parametrize("kind", ["json", "csv"])
async def test_orders_file_catalog(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    tmp_path: Path,
    kind: str,
) -> None:
    catalog = {"ORD-1": "https://files.example/a.pdf", "ORD 2/x": "/local/b.png"}
    path = tmp_path / f"orders.{kind}"
    if kind == "json":
        path.write_text(json.dumps(catalog))
    else:
        rows = ["orderId,documentUrl", *(f'"{k}","{v}"' for k, v in catalog.items())]
        path.write_text("\n".join(rows) + "\n")
    await workers.start(make_settings(ORDERS_FILE=str(path)))
    for order_id in ("ORD-1", "ORD 2/x", "ORD-404"):
        await append_trigger(redis, keyspace, trigger(order_id=order_id))
    events = await wait_for_events(redis, keyspace, 3)
    outcome = {
        e.data["orderId"]: (e.type, e.data.get("documentUrl", e.data.get("code"))) for e in events
    }
    assert outcome == {
        "ORD-1": ("trigger.projected", "https://files.example/a.pdf"),
        "ORD 2/x": ("trigger.projected", "/local/b.png"),
        "ORD-404": ("trigger.rejected", "ORDER_NOT_FOUND"),
    }


def test_the_order_service_breaker_has_spec_thresholds(make_settings: SettingsFactory) -> None:
    settings: Settings = make_settings(ORDER_API_URL="http://127.0.0.1:1")
    resolver = build_resolver(settings)
    assert isinstance(resolver, HttpOrderResolver)
    breaker = resolver.breaker
    # SPEC 6: OPEN after 5 failures, HALF_OPEN after 30 s, CLOSED after 2 successes.
    assert (breaker.failure_threshold, breaker.reset_after_s, breaker.success_threshold) == (
        5,
        30.0,
        2,
    )
