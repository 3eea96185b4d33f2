"""Test helpers: real servers on loopback, stream readers, polling."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from redis.asyncio import Redis

from schemas import codec
from schemas.entries import TriggerEntry
from streams.keys import Keyspace


def load_file_module(path: Path) -> ModuleType:
    """A Python file that is not in a package (samples/, docs/) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def trigger(
    *,
    order_id: str = "A-1",
    screen_id: str = "screen-1",
    user_id: str = "user-1",
    display_index: int = 0,
    trigger_id: str | None = None,
) -> TriggerEntry:
    now = now_ms()
    return TriggerEntry(
        id=trigger_id or str(uuid.uuid4()),
        user_id=user_id,
        screen_id=screen_id,
        order_id=order_id,
        display_index=display_index,
        timestamp=now,
        received_at=now,
        edge_id="test-edge",
    )


async def append_trigger(redis: Redis, keyspace: Keyspace, entry: TriggerEntry) -> str:
    entry_id = await redis.xadd(keyspace.triggers, codec.entry_fields(entry))
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class StreamEntry(msgspec.Struct):
    id: str
    type: str
    data: dict[str, Any]
    fields: dict[str, str]


async def read_stream(redis: Redis, stream: str) -> list[StreamEntry]:
    out = []
    for entry_id, fields in await redis.xrange(stream):
        text = {k.decode(): v.decode() for k, v in fields.items()}
        try:
            data = codec.decode_json(text["data"]) if "data" in text else {}
        except ValueError:
            data = {}  # poison entries in the dead letter keep their undecodable data
        out.append(StreamEntry(entry_id.decode(), text.get("type", ""), data, text))
    return out


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            msg = f"condition not met within {timeout} s"
            raise AssertionError(msg)
        await asyncio.sleep(interval)


def fast_failures(order_api_url: str) -> dict[str, str]:
    """Settings under which an order lookup that keeps failing is dead-lettered in well under
    a second: two deliveries, retries after 50-100 ms."""
    return {
        "ORDER_API_URL": order_api_url,
        "MAX_DELIVERIES": "2",
        "RETRY_BASE_MS": "50",
        "RETRY_MAX_MS": "100",
    }


async def wait_for_port(port: int, *, timeout: float = 20.0) -> None:
    """Until something accepts on 127.0.0.1:`port`. uvicorn logs "Application startup
    complete." before it binds: a client that connects on that line alone can be refused."""

    async def accepting() -> bool:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(accepting, timeout=timeout, interval=0.05)


async def wait_for_events(
    redis: Redis, keyspace: Keyspace, count: int, *, timeout: float = 10.0
) -> list[StreamEntry]:
    async def enough() -> bool:
        return int(await redis.xlen(keyspace.events)) >= count

    await wait_until(enough, timeout=timeout)
    return await read_stream(redis, keyspace.events)


async def pending_count(redis: Redis, keyspace: Keyspace, group: str = "projector") -> int:
    info = await redis.xpending(keyspace.triggers, group)
    return int(info["pending"])


async def rdisplay_on(
    redis_url: str, prefix: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `rdisplay ARGS` on a store and prefix: (exit code, stdout, stderr). Without
    STREAM_PARTITIONS unless `env` gives it (the tools take the count from the store)."""
    merged = {**os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": prefix}
    merged.pop("STREAM_PARTITIONS", None)
    merged.update(env or {})
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "rdisplay"),
        *args,
        env=merged,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
