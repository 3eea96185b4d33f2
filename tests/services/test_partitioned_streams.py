"""SPEC 11 on one store: STREAM_PARTITIONS=4, an edge and workers, the analysts' tools.

Every trigger, event, projection, result and dead letter lands in its screen's partition;
the tools read every partition, merged by entry id. (The same flows on a cluster, where a
cross-slot step would be refused, are in `tests/cluster/`.)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from benchmarks.order_fake import OrderService
from schemas.errors import ConfigError
from services.edge.app import Edge
from services.keys import ProjectionField, screen_key
from services.worker.app import open_worker
from streams.keys import Keyspace
from streams.partitions import Partitions
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import rdisplay_on, read_stream

COUNT = 4
SCREENS = [f"screen-{n}" for n in range(12)]


def _env(order_service: OrderService) -> dict[str, str]:
    return {
        "JWT_SECRET": ACCESS_SECRET,
        "JWT_REFRESH_SECRET": REFRESH_SECRET,
        "STREAM_PARTITIONS": str(COUNT),
        "ORDER_API_URL": order_service.url,
        "MAX_DELIVERIES": "2",
        "RETRY_BASE_MS": "50",
        "RETRY_MAX_MS": "100",
    }


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_each_screens_triggers_events_and_projection_stay_in_its_partition(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
) -> None:
    settings = make_settings(**_env(order_service))
    layout = Partitions.of(keyspace.prefix, COUNT)
    assert len({layout.index_for(s) for s in SCREENS}) == COUNT  # every partition is used
    await workers.start(settings, name="a")
    await workers.start(settings, name="b")
    async with running_edge(settings) as edge:
        screens = [await connect(edge.url, mint(f"kiosk-{s}", s, "screen")) for s in SCREENS]
        controllers = [await connect(edge.url, mint(f"user-{s}", s)) for s in SCREENS]
        try:
            sent: dict[str, dict[str, Any]] = {}
            for round_ in range(3):
                acks = await asyncio.gather(
                    *(
                        c.emit("trigger", trigger_payload(f"ORD-{s}-{round_}"))
                        for c, s in zip(controllers, SCREENS, strict=True)
                    )
                )
                for ack, screen in zip(acks, SCREENS, strict=True):
                    assert ack["success"] is True, ack
                    assert ack["data"]["screenId"] == screen
                    sent[ack["id"]] = ack
            for client in screens:
                await client.wait_for("display", 3)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{edge.url}/health") as response:
                    health = await response.json()
                async with http.get(f"{edge.url}/metrics") as response:
                    metrics = await response.text()
        finally:
            for client in (*screens, *controllers):
                await client.sio.disconnect()

    assert [p["stream"] for p in health["streams"]["partitions"]] == [
        space.triggers for space in layout.spaces
    ]
    assert health["streams"]["deadLetter"] == 0
    for space in layout.spaces:
        assert f'rd_stream_lag{{group="projector",stream="{space.triggers}"}}' in metrics
        assert f'rd_dead_letter_entries{{stream="{space.dead_letter}"}} 0.0' in metrics

    # Nothing under SPEC 6's unpartitioned names.
    root = layout.root
    assert not await redis.exists(root.triggers, root.events, root.dead_letter)
    projected: list[str] = []
    for index, space in enumerate(layout.spaces):
        triggers = await read_stream(redis, space.triggers)
        events = await read_stream(redis, space.events)
        for entry in (*triggers, *events):
            assert layout.index_for(entry.data["screenId"]) == index, entry
        kinds = Counter(entry.type for entry in events)
        acked = sum(1 for t in triggers if t.type == "display_ack")
        assert kinds["trigger.projected"] == acked  # every display was acked, in the same place
        assert kinds["display.acknowledged"] == acked
        projected += [e.data["triggerId"] for e in events if e.type == "trigger.projected"]
    assert sorted(projected) == sorted(sent)  # each trigger projected once, somewhere
    for screen in SCREENS:
        live = await redis.hgetall(screen_key(layout.for_screen(screen), screen))
        data = json.loads(live[ProjectionField.DATA.encode()])
        assert data["orderId"] == f"ORD-{screen}-2"  # the newest trigger of the screen
        assert live[ProjectionField.DISPLAY_STATUS.encode()] == b"shown"

    # The tools read every partition, merged by entry id, taking the count from the record.
    code, out, err = await rdisplay_on(redis_url, keyspace.prefix, "replay", "--stream", "events")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 * len(sent)
    assert [_id(line["id"]) for line in lines] == sorted(_id(line["id"]) for line in lines)
    code, out, err = await rdisplay_on(
        redis_url, keyspace.prefix, "replay", "--stream", "triggers", "--screen", SCREENS[5]
    )
    assert code == 0, err
    assert Counter(json.loads(line)["type"] for line in out.splitlines()) == {
        "trigger": 3,
        "display_ack": 3,
    }
    code, out, err = await rdisplay_on(redis_url, keyspace.prefix, "stats", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["overall"]["outcomes"]["projected"] == len(sent)
    assert set(stats["screens"]) == set(SCREENS)
    code, out, err = await rdisplay_on(redis_url, keyspace.prefix, "replay", "rebuild", "--json")
    assert code == 0, (out, err)
    report = json.loads(out)
    assert (report["screens"], report["differences"]) == (len(SCREENS), [])


async def test_dead_letters_of_several_partitions_are_listed_and_redriven(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
) -> None:
    # One delivery each: four failures in all stay below the circuit breaker's five.
    settings = make_settings(**{**_env(order_service), "MAX_DELIVERIES": "1"})
    layout = Partitions.of(keyspace.prefix, COUNT)
    chosen = {layout.index_for(s): s for s in SCREENS}  # one screen per partition
    await workers.start(settings)
    async with running_edge(settings) as edge:
        controllers = {p: await connect(edge.url, mint(f"user-{s}", s)) for p, s in chosen.items()}
        try:
            for partition, client in controllers.items():
                order_service.fail_next[f"ORD-{partition}"] = 1000
                ack = await client.emit("trigger", trigger_payload(f"ORD-{partition}"))
                assert ack["code"] == "DEAD_LETTERED"

            code, out, err = await rdisplay_on(redis_url, keyspace.prefix, "dlq", "list")
            assert code == 0, err
            listed = [json.loads(line) for line in out.splitlines()]
            assert sorted(line["partition"] for line in listed) == list(range(COUNT))
            assert [_id(line["id"]) for line in listed] == sorted(
                _id(line["id"]) for line in listed
            )
            for line in listed:
                assert layout.index_for(line["data"]["screenId"]) == line["partition"]

            first = listed[0]
            code, out, err = await rdisplay_on(
                redis_url, keyspace.prefix, "dlq", "show", first["id"]
            )
            assert code == 0, err
            assert json.loads(out)["partition"] == first["partition"]

            for partition in chosen:
                order_service.fail_next[f"ORD-{partition}"] = 0
            code, out, err = await rdisplay_on(
                redis_url, keyspace.prefix, "dlq", "redrive", "--all"
            )
            assert code == 0, err
            assert all(json.loads(line)["redriven"] for line in out.splitlines())
            for client in controllers.values():
                [result] = await client.wait_for("trigger:result")
                assert result["success"] is True
        finally:
            for client in controllers.values():
                await client.sio.disconnect()
    for space in layout.spaces:
        assert await redis.xlen(space.dead_letter) == 0
        kinds = [e.type for e in await read_stream(redis, space.events)]
        assert kinds[:2] == ["trigger.dead_lettered", "trigger.projected"]


async def test_a_worker_given_some_partitions_leaves_the_others_alone(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    order_service: OrderService,
) -> None:
    settings = make_settings(**{**_env(order_service), "ACK_TIMEOUT_MS": "500"})
    layout = Partitions.of(keyspace.prefix, COUNT)
    by_partition = {layout.index_for(s): s for s in SCREENS}
    stops = [asyncio.Event(), asyncio.Event()]
    async with (
        open_worker(settings, consumer_base="low", partitions=[0, 1]) as low,
        open_worker(settings, consumer_base="high", partitions=[2, 3]) as high,
        running_edge(settings) as edge,
    ):
        assert [lane.consumer.stream for lane in low.lanes] == [
            layout.spaces[0].triggers,
            layout.spaces[1].triggers,
        ]
        running = [asyncio.create_task(low.run(stops[0]))]
        served = await connect(edge.url, mint("u0", by_partition[0]))
        waiting = await connect(edge.url, mint("u2", by_partition[2]))
        try:
            assert (await served.emit("trigger", trigger_payload("ORD-0")))["success"] is True
            payload = trigger_payload("ORD-2")
            ack = await waiting.emit("trigger", payload)
            assert ack["code"] == "PENDING"  # nobody serves partition 2 yet
            assert await redis.xlen(layout.spaces[2].triggers) == 1
            assert not await redis.xlen(layout.spaces[2].events)

            running.append(asyncio.create_task(high.run(stops[1])))
            [result] = await waiting.wait_for("trigger:result")
            assert (result["id"], result["success"]) == (payload["id"], True)
        finally:
            for stop in stops:
                stop.set()
            await asyncio.wait_for(asyncio.gather(*running), 10)
            for client in (served, waiting):
                await client.sio.disconnect()
    assert [c.consumer.stats.committed for c in high.lanes] == [1, 0]

    with pytest.raises(ConfigError, match="partition 7 does not exist"):
        async with open_worker(settings, partitions=[7]):
            pass


async def test_processes_started_with_another_count_are_refused(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    order_service: OrderService,
    redis_url: str,
) -> None:
    async with running_edge(make_settings(**_env(order_service))):
        pass
    other = make_settings(**{**_env(order_service), "STREAM_PARTITIONS": "2"})
    with pytest.raises(ConfigError, match=r"holds 4 stream partitions .* STREAM_PARTITIONS is 2"):
        async with Edge(other).lifespan(Starlette()):
            pass
    with pytest.raises(ConfigError, match="holds 4 stream partitions"):
        async with open_worker(other):
            pass
    assert json.loads(await redis.get(f"{keyspace.prefix}:partitions"))["count"] == COUNT

    for command in ("serve", "edge", "worker"):
        code, _out, err = await rdisplay_on(
            redis_url, keyspace.prefix, command, env={"STREAM_PARTITIONS": "1"}
        )
        assert code == 2, (command, err)
        assert "STREAM_PARTITIONS=4" in err.splitlines()[-1], err
