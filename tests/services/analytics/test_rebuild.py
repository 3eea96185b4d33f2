"""`replay rebuild`: the event log reproduces the live projections, and a tampered one shows."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from schemas import codec
from schemas.entries import DisplayAckEntry
from services.analytics.rebuild import rebuild_and_compare
from services.keys import screen_key
from services.worker.orders import TemplateResolver
from services.worker.projector import Projector
from streams.consumer import Delivery
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import append_trigger, now_ms, read_stream, trigger, wait_until


async def _project_all(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    """Many screens, acked displays, and a superseded trigger (an older one projected last)."""
    for i in range(300):
        await append_trigger(redis, keyspace, trigger(order_id=f"o-{i}", screen_id=f"s-{i % 17}"))
    # Two triggers of screen "late" whose newer one is processed first.
    older, newer = (
        trigger(order_id="old", screen_id="late"),
        trigger(order_id="new", screen_id="late"),
    )
    await append_trigger(redis, keyspace, older)
    await append_trigger(redis, keyspace, newer)
    await redis.xgroup_create(keyspace.triggers, "projector", id="0", mkstream=True)
    reply = await redis.xreadgroup("projector", "manual-1", {keyspace.triggers: ">"}, count=1000)
    deliveries = {d[0].decode(): d[1] for d in reply[0][1]}
    projector = Projector(
        redis=redis,
        keyspace=keyspace,
        resolver=TemplateResolver("/d/{orderId}"),
        group="projector",
        maxlen=100_000,
    )
    ordered = list(deliveries.items())
    ordered[-2], ordered[-1] = ordered[-1], ordered[-2]
    for entry_id, fields in ordered:
        result = await projector.process([Delivery(entry_id, fields, 1)])
        await projector.commit(result.commits, [])
    events = await read_stream(redis, keyspace.events)
    assert sum(1 for e in events if e.data.get("superseded")) == 1
    # Screens acknowledge some displays (the worker turns them into display.acknowledged).
    await workers.start(make_settings())
    for i, event in enumerate(events[-40:]):
        if event.data.get("superseded"):
            continue
        ack = DisplayAckEntry(
            trigger_id=event.data["triggerId"],
            event_id=event.id,
            screen_id=event.data["screenId"],
            status="shown" if i % 2 else "failed",
            acked_at=now_ms(),
            error=None if i % 2 else "no viewer",
        )
        await redis.xadd(keyspace.triggers, codec.entry_fields(ack))

    async def acked() -> bool:
        events = await read_stream(redis, keyspace.events)
        return sum(e.type == "display.acknowledged" for e in events) >= 39

    await wait_until(acked)


async def _keys(redis: Redis, keyspace: Keyspace) -> set[bytes]:
    return {key async for key in redis.scan_iter(match=keyspace.pattern(), count=1000)}


async def test_rebuild_reproduces_the_live_projections(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await _project_all(redis, keyspace, make_settings, workers)
    before = await _keys(redis, keyspace)
    report = await rebuild_and_compare(redis, keyspace)
    assert report.screens == 18
    assert report.differences == []
    assert report.undecodable == 0
    # Nothing left behind: no scratch copy of any projection in the live keyspace.
    assert await _keys(redis, keyspace) == before
    late = await redis.hgetall(screen_key(keyspace, "late"))
    assert codec.decode_json(late[b"data"])["orderId"] == "new"
    statuses = set()
    for i in range(17):
        statuses.add(await redis.hget(screen_key(keyspace, f"s-{i}"), "displayStatus"))
    assert {b"shown", b"failed"} <= statuses


async def test_rebuild_finds_and_repairs_tampering(
    redis: Redis, keyspace: Keyspace, make_settings: SettingsFactory, workers: WorkerRunner
) -> None:
    await _project_all(redis, keyspace, make_settings, workers)
    await redis.hset(screen_key(keyspace, "s-3"), "data", '{"orderId":"forged"}')
    await redis.delete(screen_key(keyspace, "s-4"))
    await redis.hset(screen_key(keyspace, "ghost"), mapping={"eventId": "1-1", "data": "{}"})

    report = await rebuild_and_compare(redis, keyspace)
    kinds = {d.screen_id: d.kind for d in report.differences}
    assert kinds == {"s-3": "different", "s-4": "missing", "ghost": "extra"}
    [forged] = [d for d in report.differences if d.screen_id == "s-3"]
    assert set(forged.fields) == {"data"}
    assert forged.fields["data"]["live"] == '{"orderId":"forged"}'
    assert await redis.hget(screen_key(keyspace, "s-3"), "data") == b'{"orderId":"forged"}'

    applied = await rebuild_and_compare(redis, keyspace, apply=True)
    assert all(d.applied for d in applied.differences)
    again = await rebuild_and_compare(redis, keyspace)
    assert again.differences == []
    assert not await redis.exists(screen_key(keyspace, "ghost"))


async def test_rebuild_cli(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    redis_url: str,
    tmp_path: object,
) -> None:
    import json
    import os
    import sys
    from pathlib import Path

    await _project_all(redis, keyspace, make_settings, workers)
    await redis.hset(screen_key(keyspace, "s-1"), "eventId", "0-1")
    before = await _keys(redis, keyspace)
    env = {**os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}
    rdisplay = str(Path(sys.executable).parent / "rdisplay")

    async def run(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            rdisplay,
            "replay",
            "rebuild",
            *args,
            env=env,
            cwd=str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode()

    code, out = await run("--json")
    assert code == 1
    assert [d["screen_id"] for d in json.loads(out)["differences"]] == ["s-1"]
    assert await _keys(redis, keyspace) == before  # a report changes nothing
    code, _ = await run("--apply")
    assert code == 0
    code, out = await run()
    assert code == 0
    assert "match" in out
