"""Quick edge benchmark (issue 3): ack latency at a fixed rate with N controllers, M screens.

Open loop over real Socket.IO clients (python-socketio, websocket transport) against
`rdisplay edge` + `rdisplay worker` processes on an embedded Valkey. The full load generator
is `rdisplay bench` (a later issue).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import socketio

from benchmarks.drill_harness import ACCESS_SECRET, REFRESH_SECRET, mint
from benchmarks.pipeline import free_port, percentile, redis_server

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


async def run(args: argparse.Namespace, url: str) -> None:
    controllers = []
    screens = []
    displays = 0

    async def on_display(_data: Any) -> dict[str, str]:
        nonlocal displays
        displays += 1
        return {"status": "shown"}

    for i in range(args.screens):
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("display", on_display)
        await sio.connect(
            url, auth={"token": mint(f"s{i}", f"screen-{i}", "screen")}, transports=["websocket"]
        )
        screens.append(sio)
    for i in range(args.controllers):
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            url,
            auth={"token": mint(f"u{i}", f"screen-{i % args.screens}")},
            transports=["websocket"],
        )
        controllers.append(sio)

    latencies: list[float] = []
    codes: dict[str, int] = {}
    total = int(args.rate * args.duration)
    interval = 1 / args.rate
    start = time.perf_counter() + 0.2
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float) -> None:
        payload = {
            "id": str(uuid.uuid4()),
            "orderId": f"o-{i}",
            "timestamp": int(time.time() * 1000),
        }
        try:
            ack = await controllers[i % len(controllers)].call("trigger", payload, timeout=30)
            code = "OK" if ack.get("success") else str(ack.get("code"))
        except Exception as exc:
            code = type(exc).__name__
        codes[code] = codes.get(code, 0) + 1
        latencies.append((time.perf_counter() - scheduled) * 1000)

    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    latencies.sort()
    print(
        f"rate {args.rate}/s x {args.duration}s, {args.controllers} controllers, "
        f"{args.screens} screens: p50 {percentile(latencies, 0.5):.2f} p95 "
        f"{percentile(latencies, 0.95):.2f} p99 {percentile(latencies, 0.99):.2f} "
        f"max {latencies[-1]:.2f} ms; codes {codes}; displays {displays}",
        flush=True,
    )
    for sio in controllers + screens:
        await sio.disconnect()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--controllers", type=int, default=200)
    parser.add_argument("--screens", type=int, default=200)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--otlp", action="store_true", help="trace 100 %% and export by OTLP/HTTP to a local sink"
    )
    args = parser.parse_args()
    with redis_server(args.redis_url) as redis_url, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "SOCKET_IO_PORT": str(port),
            "JWT_SECRET": ACCESS_SECRET,
            "JWT_REFRESH_SECRET": REFRESH_SECRET,
            "LOG_LEVEL": "warning",
            "DATA_DIR": tmp,
            "STREAM_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
            "RATE_LIMIT_MAX_REQUESTS": "1000000",
        }
        procs = []
        if args.otlp:
            sink_port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(sink_port)]
                )
            )
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
            env["OTEL_TRACES_SAMPLER"] = "always_on"
        procs += [subprocess.Popen([RDISPLAY, cmd], env=env) for cmd in ("edge", "worker")]
        names = [*(["otlp-sink"] if args.otlp else []), "edge", "worker"]
        try:
            time.sleep(2)
            before = {p.pid: _cpu_s(p.pid) for p in procs}
            asyncio.run(run(args, f"http://127.0.0.1:{port}"))
            used = {
                name: _cpu_s(p.pid) - before[p.pid] for name, p in zip(names, procs, strict=True)
            }
            total = int(args.rate * args.duration)
            print(
                "cpu ms per trigger: "
                + ", ".join(f"{name} {1000 * s / total:.3f}" for name, s in used.items()),
                flush=True,
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(15)


if __name__ == "__main__":
    main()
