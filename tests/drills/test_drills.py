"""Fault drills at CI scale (issue 6): real edge and worker processes, real clients.

After each drill: nothing acknowledged is lost, no duplicate `trigger.projected`, 0 pending
after the drain, and every screen shows its newest trigger (see `tests/drills/harness.py`).
`benchmarks/drills.py` runs the same drills at full scale.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from benchmarks.drill_harness import (
    Cluster,
    Report,
    Scale,
    Setup,
    edge_kill,
    mint,
    order_service_outage,
    redis_restart,
    worker_kills,
)
from benchmarks.order_fake import OrderService
from services.client import Controller
from streams.keys import Keyspace
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

CI = Scale(rate=100, duration_s=6, controllers=20, screens=10, kill_every_s=1.0, outage_s=3.0)


@pytest.fixture
def setup(redis_url: str, keyspace: Keyspace, tmp_path: Path, order_service: OrderService) -> Setup:
    return Setup(redis_url, keyspace, tmp_path, order_service, CI)


def assert_held(report: Report) -> None:
    print(report.summary())
    assert report.ok, report.summary()
    assert report.sent == int(CI.rate * CI.duration_s)
    assert report.acked == report.sent


async def test_workers_sigkilled_every_second_under_load(setup: Setup) -> None:
    report = await worker_kills(setup)
    assert_held(report)


async def test_edge_sigkilled_under_load_while_controllers_retry(setup: Setup) -> None:
    report = await edge_kill(setup)
    assert_held(report)


@pytest.mark.own_store
async def test_redis_sigkilled_under_load_loses_nothing_acknowledged(setup: Setup) -> None:
    # appendfsync always: every write is on disk before its reply, so before any ack.
    report = await redis_restart(setup, crash=True)
    assert_held(report)


async def test_order_service_down_the_breaker_recovers_by_itself(
    redis_url: str, keyspace: Keyspace, tmp_path: Path, order_service: OrderService
) -> None:
    # No fresh worker: both workers' circuits open, stay open for the breaker's fixed 30 s,
    # then probe (HALF_OPEN) and close again. Triggers sent meanwhile wait that long.
    scale = dataclasses.replace(CI, deadline_s=90, drain_s=60)
    setup = Setup(redis_url, keyspace, tmp_path, order_service, scale)
    report = await order_service_outage(setup, fresh_worker_after=False)
    assert_held(report)
    assert report.dead_lettered == 0  # MAX_DELIVERIES=1000: retried, never dead-lettered
    assert report.measures["lookups_second_half"] == 0  # open circuits: workers paused
    # The first lookup after the outage is the HALF_OPEN probe, about 30 s after the circuit
    # opened (which was within the outage's first moments): at least 30 s minus the outage.
    assert report.measures["first_lookup_after_outage_s"] >= 30 - CI.outage_s - 1
    assert report.measures["workers_whose_circuit_closed_again"] == 2


async def test_controller_trigger_keeps_retrying_across_an_edge_restart(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    cluster = Cluster(
        redis_url=redis_url,
        prefix=keyspace.prefix,
        workdir=tmp_path,
        DOCUMENT_URL_TEMPLATE="/d/{orderId}.pdf",
    )
    controller: Controller | None = None
    try:
        await cluster.start_worker()
        port = free_port()
        edge = await cluster.start_edge(port)
        controller = Controller(
            url=f"http://127.0.0.1:{port}", token=mint("user-1", "screen-1"), ack_timeout=1.0
        )
        await controller.connect()
        await cluster.kill(edge)

        async def noticed() -> bool:  # the client saw the disconnect and is reconnecting
            return not controller.sio.connected

        await wait_until(noticed)
        call = asyncio.create_task(controller.trigger("A-1", deadline=20))
        await asyncio.sleep(0.5)
        await cluster.start_edge(port)
        ack = await call  # BadNamespaceError: "/ is not a connected namespace"
        assert ack["success"] is True
    finally:
        if controller is not None:
            await controller.close()
        await cluster.close()
