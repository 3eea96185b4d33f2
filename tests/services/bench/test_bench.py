"""`rdisplay bench` as a real subprocess against a real edge and worker (small scale)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from services.config.settings import Settings
from tests.edge_helpers import ACCESS_SECRET, RunningEdge, running_edge

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


async def bench(*args: str) -> dict[str, Any]:
    # The edge and the worker run in this event loop: wait for the bench without blocking it.
    process = await asyncio.create_subprocess_exec(
        RDISPLAY,
        "bench",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LOG_LEVEL": "warning"},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    document: dict[str, Any] = json.loads(stdout)
    return document


@pytest.mark.slow
@pytest.mark.parametrize("procs", [pytest.param(1, id="one-process"), pytest.param(2, id="two")])
async def test_bench_counts_every_trigger_once(
    edge: RunningEdge, edge_settings: Settings, redis_url: str, procs: int
) -> None:
    document = await bench(
        "--url", edge.url,
        "--secret", ACCESS_SECRET,
        "--rate", "50",
        "--duration", "2",
        "--warmup", "0.5",
        "--controllers", "5",
        "--screens", "5",
        "--procs", str(procs),
        "--redis-url", redis_url,
        "--prefix", edge_settings.stream_prefix,
        "--json",
    )  # fmt: skip
    assert document["procs"] == procs
    [run] = document["runs"]
    assert run["sent"] == 100
    assert run["acked"] == {"OK": 100}
    assert run["lost"] == 0
    assert run["pending"] == 0
    assert run["duplicates"] == 0
    assert run["displays"] == 100
    ack = run["ackMs"]
    assert 0 < ack["p50"] <= ack["p95"] <= ack["p99"] <= ack["max"]
    shown = run["displayMs"]
    assert 0 < shown["p50"] <= shown["p95"] <= shown["p99"] <= shown["max"]
    assert run["sustained"] is True


@pytest.mark.slow
async def test_bench_spreads_clients_over_several_edges(
    edge: RunningEdge, edge_settings: Settings, redis_url: str
) -> None:
    async with running_edge(edge_settings) as second:
        document = await bench(
            "--url", f"{edge.url},{second.url}",
            "--secret", ACCESS_SECRET,
            "--rate", "40",
            "--duration", "2",
            "--warmup", "0.5",
            "--controllers", "4",
            "--screens", "4",
            "--procs", "1",
            "--redis-url", redis_url,
            "--prefix", edge_settings.stream_prefix,
            "--json",
        )  # fmt: skip
    [run] = document["runs"]
    assert run["acked"] == {"OK": 80}
    assert (run["lost"], run["pending"], run["duplicates"]) == (0, 0, 0)
    assert run["displays"] == 80
    # Both edges answered triggers (client j connects to edge j mod 2): 2 controllers each.
    assert edge.edge.metrics.acks.success >= 40
    assert second.edge.metrics.acks.success >= 40
