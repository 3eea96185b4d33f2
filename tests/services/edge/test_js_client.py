"""The core flow driven by the official JavaScript client (socket.io-client v4, tests/js)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.config.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    RunningEdge,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import now_ms, read_stream, wait_until

JS_DIR = Path(__file__).resolve().parents[2] / "js"
FLOW_TIMEOUT_S = 45.0
STREAM_ID = re.compile(r"^\d+-\d+$")
ACK_DATA = {"eventId", "screenId", "orderId", "displayIndex", "windowId", "documentUrl"}
DISPLAY = {"eventId", "triggerId", "orderId", "displayIndex", "windowId", "documentUrl", "issuedAt"}


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with tests/js/node_modules installed from the lockfile (`npm ci`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the JavaScript client test needs node and npm on PATH")
    # npm records what it installed in node_modules/.package-lock.json: install when that is
    # missing (a fresh clone) or older than the lockfile (a bumped dependency).
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=90,  # inside the per-test timeout, with a clearer failure
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


@pytest.fixture
def edge_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="3000"
    )


@pytest.fixture
async def edge(edge_settings: Settings, workers: WorkerRunner) -> AsyncIterator[RunningEdge]:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as running:
        yield running


async def run_flow(node: str, flow_input: dict[str, Any]) -> dict[str, Any]:
    """Runs tests/js/flow.mjs; returns its one JSON line (fails on any other outcome)."""
    env = {**os.environ, "FLOW_INPUT": json.dumps(flow_input)}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "flow.mjs"),
        cwd=JS_DIR,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), FLOW_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        pytest.fail(f"flow.mjs did not finish within {FLOW_TIMEOUT_S} s")
    out, err = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, f"flow.mjs exited {proc.returncode}:\n{err}\n{out}"
    lines = out.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{out}\nstderr:\n{err}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


async def test_core_flow_with_the_official_js_client(
    node: str, edge: RunningEdge, redis: Redis, keyspace: Keyspace
) -> None:
    payload = trigger_payload("ORD-JS", displayIndex=2)
    started = now_ms()
    result = await run_flow(
        node,
        {
            "url": edge.url,
            "scenario": "core",
            "timeoutMs": int((FLOW_TIMEOUT_S - 5) * 1000),
            "tokens": {
                "controller": mint(),
                "screen": mint(role="screen"),
                "expired": mint(ttl=-10),
                "refreshAsAccess": mint(
                    typ="refresh", secret=REFRESH_SECRET, fid=str(uuid.uuid4())
                ),
            },
            "trigger": payload,
        },
    )
    finished = now_ms()

    # Transports: the screen on websocket only, the controller polling and then upgraded.
    assert result["screen"]["id"]
    assert result["screen"]["transport"] == "websocket"
    assert result["controller"]["id"]
    assert result["controller"]["transportAtOpen"] == "polling"
    assert result["controller"]["upgradedTo"] == "websocket"
    assert result["controller"]["transport"] == "websocket"

    # The first trigger: acked once its projection event reached the edge.
    first = result["first"]
    assert set(first) == {"id", "success", "duplicate", "data"}, first
    assert first["id"] == payload["id"]
    assert first["success"] is True
    assert first["duplicate"] is False
    data = first["data"]
    assert set(data) >= ACK_DATA | {"projectedAt"}, data
    assert set(data) - ACK_DATA - {"projectedAt"} <= {"superseded"}, data
    assert STREAM_ID.match(data["eventId"]), data
    assert data["screenId"] == "screen-1"
    assert data["orderId"] == "ORD-JS"
    assert data["displayIndex"] == 2
    assert data["documentUrl"] == "/documents/ORD-JS.pdf"
    assert isinstance(data["windowId"], str)
    assert data["windowId"]
    assert isinstance(data["projectedAt"], int)
    assert started <= data["projectedAt"] <= finished
    assert data.get("superseded", False) is False
    events = await read_stream(redis, keyspace.events)
    [projected] = [e for e in events if e.id == data["eventId"]]
    assert projected.data["triggerId"] == payload["id"]

    # The same id again: the original result, marked as a duplicate, and nothing appended.
    repeat = result["repeat"]
    assert repeat["id"] == payload["id"]
    assert repeat["success"] is True
    assert repeat["duplicate"] is True
    assert repeat["data"] == data

    # An unknown field: refused at the edge, never appended.
    invalid = result["invalid"]
    assert set(invalid) == {"id", "success", "code", "error"}, invalid
    assert invalid["id"] == result["invalidSent"]["id"]
    assert invalid["success"] is False
    assert invalid["code"] == "VALIDATION_ERROR"
    assert isinstance(invalid["error"], str)
    assert invalid["error"]
    # rd:triggers also carries the screen's display_ack entry: count the triggers only.
    triggers = [e for e in await read_stream(redis, keyspace.triggers) if e.type == "trigger"]
    assert [e.data["id"] for e in triggers] == [payload["id"]]

    # The screen got `display` once, with an ack callback, and its fields match the ack.
    [received] = result["displays"]
    assert received["hadCallback"] is True
    display = received["payload"]
    assert set(display) == DISPLAY, display
    assert display["eventId"] == data["eventId"]
    assert display["triggerId"] == payload["id"]
    assert display["orderId"] == "ORD-JS"
    assert display["displayIndex"] == 2
    assert display["windowId"] == data["windowId"]
    assert display["documentUrl"] == "/documents/ORD-JS.pdf"
    assert isinstance(display["issuedAt"], int)
    assert started <= display["issuedAt"] <= finished

    # The callback's `{status: "shown"}` became a display.acknowledged event.
    async def acknowledged() -> bool:
        events = await read_stream(redis, keyspace.events)
        return any(e.type == "display.acknowledged" for e in events)

    await wait_until(acknowledged)
    events = await read_stream(redis, keyspace.events)
    [shown] = [e for e in events if e.type == "display.acknowledged"]
    assert shown.data["status"] == "shown"
    assert shown.data["eventId"] == data["eventId"]

    # Refusals arrive as connect_error with the SPEC's message, on both transports.
    refusals = result["refusals"]
    assert refusals["expiredWebsocket"]["message"] == "TOKEN_EXPIRED"
    assert refusals["expiredPolling"]["message"] == "TOKEN_EXPIRED"
    assert refusals["missingWebsocket"]["message"] == "MISSING_TOKEN"
    assert refusals["missingPolling"]["message"] == "MISSING_TOKEN"
    assert refusals["refreshAsAccess"]["message"] == "INVALID_TOKEN"
    assert refusals["expiredPolling"]["transportAtOpen"] == "polling"
    assert refusals["missingPolling"]["transportAtOpen"] == "polling"
    assert refusals["expiredWebsocket"]["transportAtOpen"] == "websocket"
    assert refusals["missingWebsocket"]["transportAtOpen"] == "websocket"

    assert isinstance(result["elapsedMs"], int)
