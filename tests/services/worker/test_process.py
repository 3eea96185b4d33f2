"""Real `rdisplay worker` processes: SIGKILL mid-batch loses nothing, SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from streams.keys import Keyspace
from tests.helpers import append_trigger, read_stream, trigger, wait_until

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn_worker(redis_url: str, keyspace: Keyspace, tmp_path: Path) -> AsyncIterator[Spawn]:
    processes: list[asyncio.subprocess.Process] = []

    async def spawn(**env: str) -> asyncio.subprocess.Process:
        full = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": keyspace.prefix,
            "RETRY_BASE_MS": "200",
            "RETRY_MAX_MS": "800",
            "MAX_DELIVERIES": "20",
            "LOG_LEVEL": "warning",
            **env,
        }
        process = await asyncio.create_subprocess_exec(
            RDISPLAY,
            "worker",
            env=full,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(
    redis: Redis,
    keyspace: Keyspace,
    order_service: OrderService,
    spawn_worker: Spawn,
) -> None:
    order_service.delay_s = 0.05  # each batch is in flight for a while
    entries = [trigger(order_id=f"o-{i}", screen_id=f"s-{i % 7}") for i in range(400)]
    for entry in entries[:200]:
        await append_trigger(redis, keyspace, entry)

    spawn = spawn_worker
    for round_ in range(4):
        process = await spawn(ORDER_API_URL=order_service.url)

        async def busy(before: int = order_service.total) -> bool:
            return order_service.total > before

        await wait_until(busy, timeout=20)
        await asyncio.sleep(0.03 + 0.02 * round_)
        process.kill()  # SIGKILL, mid-batch: lookups in flight, nothing committed for them
        await process.wait()
        if round_ == 1:
            for entry in entries[200:]:
                await append_trigger(redis, keyspace, entry)

    final = await spawn(ORDER_API_URL=order_service.url)

    async def all_done() -> bool:
        return int(await redis.xlen(keyspace.events)) >= len(entries)

    await wait_until(all_done, timeout=60)
    await asyncio.sleep(0.5)  # a duplicate, if any, would arrive now
    events = await read_stream(redis, keyspace.events)
    counts = Counter(e.data["triggerId"] for e in events if e.type == "trigger.projected")
    assert set(counts) == {e.id for e in entries}
    assert max(counts.values()) == 1
    assert len(events) == len(entries)
    final.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(final.wait(), 10) == 0
    info = await redis.xpending(keyspace.triggers, "projector")
    assert info["pending"] == 0


@pytest.mark.slow
async def test_sigterm_stops_within_ten_seconds_and_leaves_work_pending(
    redis: Redis,
    keyspace: Keyspace,
    order_service: OrderService,
    spawn_worker: Spawn,
) -> None:
    order_service.down = True  # nothing can finish: entries stay pending
    for i in range(5):
        await append_trigger(redis, keyspace, trigger(order_id=f"o-{i}"))
    process = await spawn_worker(ORDER_API_URL=order_service.url)

    async def tried() -> bool:
        return order_service.total >= 5

    await wait_until(tried, timeout=20)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert time.monotonic() - started < 10
    info = await redis.xpending(keyspace.triggers, "projector")
    assert info["pending"] == 5  # unfinished entries stay pending for another worker
    assert await redis.xlen(keyspace.events) == 0
