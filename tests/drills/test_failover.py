"""The cluster failover drill at CI scale (SPEC 11, issue 15): a master of a 3-master,
3-replica Valkey cluster SIGKILLed under load, while its replica lags, with
REDIS_WAIT_REPLICAS=1. The replica takes over; nothing acknowledged is lost, nothing is
projected twice, screens end on their newest trigger. `python -m benchmarks.failover` runs it
bigger, and with k = 0 for comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.drill_harness import Scale
from benchmarks.failover import failover
from benchmarks.order_fake import OrderService

pytestmark = [pytest.mark.slow, pytest.mark.own_store]

CI = Scale(rate=60, duration_s=9, controllers=24, screens=12, deadline_s=60, drain_s=60)
RESUME_BOUND_S = 20.0
"""From the kill to the first success on the killed master's partitions: the failover
(cluster-node-timeout 1.5 s and the election), the clients' topology refresh, and with k = 1
the old master back as a replica (2 s down, then its full sync) before a fence completes."""


async def test_a_master_sigkilled_under_load_loses_nothing_acknowledged(
    tmp_path: Path, order_service: OrderService
) -> None:
    # The replica lags (paused 1 s, its link dropped by the master) when the master dies: with
    # REDIS_WAIT_REPLICAS=0 this loses acknowledged triggers (python -m benchmarks.failover
    # --wait-replicas 0 --replica-lag 1 shows how many); with 1 it must lose none.
    report = await failover(tmp_path, order_service, CI, wait_replicas=1, replica_lag_s=1.0)
    print(report.summary(), report.measures)
    assert report.ok, report.summary()
    assert report.sent == int(CI.rate * CI.duration_s)
    assert report.acked == report.sent
    assert report.lost == report.duplicates == 0
    assert 0 < report.measures["resumed_s"] < RESUME_BOUND_S, report.measures
