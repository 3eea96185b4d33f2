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
from tests.helpers import free_port, wait_for_port, wait_until
from tests.services.cli.test_cli import ServeProcess

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


_EVERY_WAY_TO_STDERR = r"""
import asyncio, gc, logging, sys, threading, warnings

early = logging.getLogger("lib.early")
early.addHandler(logging.StreamHandler())  # a library's own plain handler, made at import

from observability.logging import configure_logging

configure_logging("info", "json", service=True)

early.error("early library handler")
late = logging.getLogger("lib.late")
late.addHandler(logging.StreamHandler())  # made after configuration: its text is wrapped
late.propagate = False
late.error("late library handler")
logging.getLogger("engineio.server").info("engine.io packet with a token")  # below its floor
print("a print to stderr", file=sys.stderr)
sys.stderr.write("two lines\nin one write\n")
warnings.warn("a warning", DeprecationWarning, stacklevel=1)
thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
thread.start()
thread.join()

class Broken:
    def __del__(self):
        raise RuntimeError("unraisable")

Broken()
gc.collect()

async def main():
    async def fail():
        raise ValueError("never retrieved")
    task = asyncio.ensure_future(fail())
    await asyncio.sleep(0)
    del task
    gc.collect()

asyncio.run(main())
sys.stderr.write("a partial line at exit")
raise SystemError("uncaught in main")
"""


async def test_every_stderr_line_is_json_however_it_was_written(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "always",
        "-c",
        _EVERY_WAY_TO_STDERR,
        cwd=Path(__file__).parents[2],
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    records = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    assert all(isinstance(r, dict) and {"time", "level", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert "early library handler" in messages
    assert messages.count("early library handler") == 1  # its own handler was removed
    assert "late library handler" in messages
    assert "a print to stderr" in messages
    assert "two lines" in messages
    assert "in one write" in messages
    assert "a partial line at exit" in messages
    assert not any("engine.io packet" in m for m in messages)
    assert any("a warning" in m for m in messages)
    by_message = {r["message"]: r for r in records}
    thread = by_message["uncaught exception in a thread"]
    assert thread["level"] == "error"
    assert thread["thread_name"] == "worker-thread"
    assert "ZeroDivisionError" in thread["exception"]
    assert any("unraisable" in r.get("exception", "") for r in records)
    assert any("never retrieved" in r.get("exception", "") for r in records)
    uncaught = by_message["uncaught exception"]
    assert "SystemError: uncaught in main" in uncaught["exception"]


@pytest.mark.slow
async def test_hostile_engine_io_requests_leave_only_json_on_stderr(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    port = free_port()
    serve = await ServeProcess.start(
        tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        SOCKET_IO_PORT=str(port),
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        LOG_FORMAT="json",
    )
    base = f"http://127.0.0.1:{port}/socket.io/"
    try:
        await serve.wait_for_log("Application startup complete.", timeout=20)
        await wait_for_port(port)
        async with aiohttp.ClientSession() as session:
            for query in (
                "?EIO=3&transport=polling",  # the Socket.IO v2 protocol
                "?EIO=4&transport=polling&sid=no-such-session",
                "?EIO=4&transport=carrier-pigeon",
                "?EIO=banana&transport=polling",
            ):
                async with session.get(base + query) as response:
                    assert response.status == 400
            async with session.post(
                base + "?EIO=4&transport=polling&sid=no-such-session", data=b"\x00garbage"
            ) as response:
                assert response.status == 400
            async with session.ws_connect(base + "?EIO=4&transport=websocket") as ws:
                await ws.receive()  # the open packet
                await ws.send_str("4not a socket.io packet")
                await ws.send_bytes(b"\xff\xfe")
                await ws.receive()
        assert await serve.terminate(timeout=15) == 0
    finally:
        await serve.kill()
    records = [json.loads(line) for line in serve.lines]  # every line is JSON
    assert all(isinstance(record, dict) for record in records)
    engine_io = [r for r in records if r["logger"] == "engineio.server"]
    assert any("unsupported version" in r["message"] for r in engine_io)
    # The client's fault, not the server's: nothing at error level.
    assert [r for r in records if r["level"] == "error"] == []
