"""A real `rdisplay serve` process exports its spans by OTLP/HTTP to a real receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from streams.keys import Keyspace
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, connect, mint, trigger_payload
from tests.helpers import free_port, wait_until
from tests.otlp_receiver import otlp_receiver

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


@pytest.mark.slow
async def test_serve_exports_one_trace_per_trigger(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    async with otlp_receiver() as receiver:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": keyspace.prefix,
            "SOCKET_IO_PORT": str(port),
            "JWT_SECRET": ACCESS_SECRET,
            "JWT_REFRESH_SECRET": REFRESH_SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "rdisplay-test",
            "LOG_LEVEL": "warning",
        }
        serve = await asyncio.create_subprocess_exec(
            RDISPLAY, "serve", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        url = f"http://127.0.0.1:{port}"
        try:

            async def up() -> bool:
                try:
                    async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, timeout=20)
            screen = await connect(url, mint(role="screen"))
            controller = await connect(url, mint())
            try:
                acks = [
                    await controller.emit("trigger", trigger_payload(f"o-{i}")) for i in range(3)
                ]
                assert all(a["success"] for a in acks)
                await screen.wait_for("display", 3)
            finally:
                await controller.sio.disconnect()
                await screen.sio.disconnect()
        finally:
            serve.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(serve.communicate(), 15)
        assert serve.returncode == 0, err.decode()[-2000:]
        # Shutdown flushed the batch processor: everything is here without waiting.
        spans = receiver.spans
    receives = [s for s in spans if s.name == "trigger receive"]
    assert len(receives) == 3
    traces = {s.trace_id for s in receives}
    assert len(traces) == 3
    for trace_id in traces:
        names = {s.name for s in spans if s.trace_id == trace_id}
        assert {
            "trigger receive",
            f"send {keyspace.triggers}",
            f"process {keyspace.triggers}",
            f"send {keyspace.events}",
            f"receive {keyspace.events}",
        } <= names
    kinds = {s.name: s.kind for s in spans}
    assert kinds["trigger receive"] == "SERVER"
    assert kinds[f"process {keyspace.triggers}"] == "CONSUMER"
    assert kinds[f"send {keyspace.events}"] == "PRODUCER"
    assert {s.service_name for s in spans} == {"rdisplay-test"}
