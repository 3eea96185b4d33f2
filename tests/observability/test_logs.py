"""Logs: JSON lines with trace ids inside spans; no token or secret in a real run's output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from observability.logging import JsonFormatter
from streams.keys import Keyspace
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, connect, mint, trigger_payload
from tests.helpers import free_port, wait_until

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


def test_json_lines_carry_the_active_span() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.json")
    log.addHandler(handler)
    log.propagate = False
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("work") as span:
            log.warning("inside", extra={"entry_id": "1-0", "token": "eyJ.secret.value"})
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["entry_id"] == "1-0"
    assert inside["token"] == "[redacted]"
    assert "trace_id" not in outside


@pytest.mark.slow
async def test_a_real_run_logs_json_and_no_token(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": keyspace.prefix,
        "SOCKET_IO_PORT": str(port),
        "JWT_SECRET": ACCESS_SECRET,
        "JWT_REFRESH_SECRET": REFRESH_SECRET,
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
    }
    issued = await asyncio.create_subprocess_exec(
        RDISPLAY,
        "token",
        "issue",
        "--user",
        "u1",
        "--screen",
        "s1",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    pair_out, _ = await issued.communicate()
    pair = json.loads(pair_out)
    serve = await asyncio.create_subprocess_exec(
        RDISPLAY,
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    secrets_seen = [pair["accessToken"], pair["refreshToken"], ACCESS_SECRET, REFRESH_SECRET]
    try:

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=20)
        client = await connect(url, pair["accessToken"])
        try:
            ack = await client.emit("trigger", trigger_payload())
            assert ack["success"] is True
            fresh = mint(user="u1", screen="s1")
            secrets_seen.append(fresh)
            assert (await client.emit("auth:refresh", {"accessToken": fresh}))["success"]
            await client.emit("auth:refresh", {"accessToken": "bad." + fresh})
        finally:
            await client.sio.disconnect()
        async with aiohttp.ClientSession() as session:
            body = {"refreshToken": pair["refreshToken"], "screenId": "s1"}
            async with session.post(f"{url}/api/auth/refresh", json=body) as response:
                rotated = await response.json()
            secrets_seen += [rotated["accessToken"], rotated["refreshToken"]]
            async with session.post(f"{url}/api/auth/refresh", json=body) as response:
                assert response.status == 401  # reuse: family revoked
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(serve.communicate(), 15)
    assert serve.returncode == 0
    lines = err.decode().splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(record)
    text = err.decode() + out.decode()
    for secret in secrets_seen:
        assert secret not in text
        assert secret.split(".")[-1] not in text  # not even a signature
