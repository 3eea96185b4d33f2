"""docs/analysts.md's Python examples run as written, against a real store.

The examples address the deployment the docs describe (`redis://127.0.0.1:6379/0`, prefix `rd`);
the test points those two names at this test's store and prefix and changes nothing else, so
an example that no longer matches the API (or pandas) fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from schemas import codec
from schemas.events import DisplayAcknowledged, TriggerProjected, TriggerRejected
from streams.keys import Keyspace
from tests.services.cli.test_cli import run_cli

DOC = Path(__file__).parents[1] / "docs" / "analysts.md"
DOC_URL = "redis://127.0.0.1:6379/0"
DAY_MS = int(datetime(2024, 6, 1, 10, tzinfo=UTC).timestamp() * 1000)
# The shell lines whose output files the pandas example reads.
DAY_FILE = "rdisplay replay --since 2024-06-01 --until 2024-06-02 --screen screen-42 > day.jsonl"
CSV_FILE = "rdisplay replay --since 2024-06-01 --format csv > events.csv"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _projected(n: int, screen: str, at: int) -> TriggerProjected:
    return TriggerProjected(
        trigger_id=f"t{n}",
        user_id="user-17",
        screen_id=screen,
        order_id=f"ORD-{n}",
        display_index=0,
        window_id=f"{screen}#0",
        document_url=f"/documents/ORD-{n}.pdf",
        trigger_entry_id=f"{at - 10}-0",
        timestamp=at - 12,
        received_at=at - 10,
        projected_at=at - 10 + n,  # edge → projection: n ms
        deliveries=1,
    )


async def _write_log(redis: Redis, keyspace: Keyspace) -> None:
    """A day in June 2024 (screen-42 and screen-7), then a few events appended now."""
    for n in range(10):
        at = DAY_MS + 1000 * n
        event = _projected(n, "screen-42" if n % 2 == 0 else "screen-7", at)
        await redis.xadd(keyspace.events, codec.event_fields(event), id=f"{at}-0")
    for n in range(2):
        rejected = TriggerRejected(
            trigger_id=f"r{n}",
            user_id="user-17",
            screen_id="screen-42",
            code="ORDER_NOT_FOUND",
            message="no such order",
        )
        at = DAY_MS + 60_000 + n
        await redis.xadd(keyspace.events, codec.event_fields(rejected), id=f"{at}-0")
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for n, screen in ((20, "screen-42"), (21, "screen-42"), (22, "screen-7"), (23, "screen-42")):
        await redis.xadd(keyspace.events, codec.event_fields(_projected(n, screen, now_ms)))
    ack = DisplayAcknowledged(
        trigger_id="t23", event_id="1-0", screen_id="screen-42", status="shown", acked_at=now_ms
    )
    await redis.xadd(keyspace.events, codec.event_fields(ack))


async def _run_block(source: str, namespace: dict[str, Any]) -> None:
    """One example as a notebook cell: top-level `await` / `async for` allowed."""
    code = compile(source, str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        await result


async def test_the_analysts_python_examples_run(
    redis: Redis,
    redis_url: str,
    keyspace: Keyspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = DOC.read_text()
    assert DAY_FILE in text
    assert CSV_FILE in text
    await _write_log(redis, keyspace)
    env = {"REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}
    for line in (DAY_FILE, CSV_FILE):
        command, _, target = line.partition(" > ")
        result = run_cli(*command.split()[1:], cwd=tmp_path, **env)
        assert result.returncode == 0, result.stderr
        (tmp_path / target).write_text(result.stdout)
    monkeypatch.chdir(tmp_path)

    blocks = python_blocks(text)
    assert len(blocks) == 3, "the test knows three Python examples: update it with the docs"
    namespace: dict[str, Any] = {}
    try:
        for block in blocks:
            block = block.replace(DOC_URL, redis_url)
            block = block.replace('"rd:events"', f'"{keyspace.events}"')
            block = block.replace('prefix="rd"', f'prefix="{keyspace.prefix}"')
            await _run_block(block, namespace)
    finally:
        if isinstance(namespace.get("redis"), Redis):
            await namespace["redis"].aclose()

    # pandas from JSONL: screen-42's five projections of that day, their latencies.
    assert sorted(namespace["latency"].tolist()) == [0, 2, 4, 6, 8]
    # pandas from CSV: every event since that day, data flattened beside id, type, v.
    table = namespace["table"]
    assert len(table) == 12 + 5
    assert {"id", "type", "v", "screenId", "triggerId"} <= set(table.columns)
    # streams.replay.read into a DataFrame: the same five, by id.
    frame = namespace["df"]
    assert sorted(frame["triggerId"]) == ["t0", "t2", "t4", "t6", "t8"]
    # services.analytics.event_log.read_events: the last day's screen-42 projections; the last hour.
    assert sorted(namespace["latencies"]) == [20, 21, 23]
    assert len(namespace["records"]) == 5
