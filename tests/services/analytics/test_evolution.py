"""The analysts' and operators' tools over a log written by another v1 writer (SPEC 6).

Events carry exactly the fields SPEC section 6 lists, no more; the tools count them exactly.
One undecodable entry is then added to each stream: every tool says it skipped one.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from services.keys import screen_key
from streams.keys import Keyspace
from tests.services.cli.test_cli import run_cli

T0 = 1_700_000_000_000


def _identity(n: int, screen: str) -> dict[str, Any]:
    return {
        "triggerId": f"t{n}",
        "userId": "user-1",
        "screenId": screen,
        "orderId": f"ORD-{n}",
        "displayIndex": 0,
        "triggerEntryId": f"{T0 + n}-0",
        "timestamp": T0 + n,
        "receivedAt": T0 + n + 2,
    }


def _projected(n: int, screen: str) -> dict[str, Any]:
    return _identity(n, screen) | {
        "windowId": f"{screen}#0",
        "documentUrl": f"/d/ORD-{n}.pdf",
        "projectedAt": T0 + n + 7,
        "deliveries": 1,
        "superseded": False,
    }


class _Log:
    """What the test wrote, to compare the tools' answers with."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, str]] = {}


async def _write_spec_only_log(redis: Redis, keyspace: Keyspace) -> _Log:
    log = _Log()
    entries: list[tuple[str, dict[str, Any]]] = []
    for n, screen in enumerate(["s1", "s1", "s2", "s1", "s2"]):
        entries.append(("trigger.projected", _projected(n, screen)))
    for n in range(10, 14):
        entries.append(
            (
                "trigger.rejected",
                _identity(n, "s2") | {"code": "ORDER_NOT_FOUND", "message": "no such order"},
            )
        )
    for n in (20, 21):
        entries.append(
            (
                "trigger.dead_lettered",
                _identity(n, "s1")
                | {
                    "code": "DEAD_LETTERED",
                    "message": "timed out",
                    "deliveries": 5,
                    "deadLetterId": f"{T0 + n}-1",
                },
            )
        )
    ids: list[str] = []
    for position, (kind, data) in enumerate(entries):
        event_id = f"{T0 + 100 + position}-0"
        ids.append(event_id)
        await redis.xadd(
            keyspace.events,
            {"type": kind, "v": "1", "data": msgspec.json.encode(data)},
            id=event_id,
        )
    # s1's projection is trigger 3 (ids[3]); the screen showed it.
    await redis.xadd(
        keyspace.events,
        {
            "type": "display.acknowledged",
            "v": "1",
            "data": msgspec.json.encode(
                {
                    "triggerId": "t3",
                    "eventId": ids[3],
                    "screenId": "s1",
                    "status": "shown",
                    "error": None,
                    "ackedAt": T0 + 500,
                }
            ),
        },
        id=f"{T0 + 200}-0",
    )
    # The live projections, as the worker wrote them.
    for screen, n, event_id in (("s1", 3, ids[3]), ("s2", 4, ids[4])):
        live = {
            "eventId": event_id,
            "triggerEntryId": f"{T0 + n}-0",
            "data": msgspec.json.encode(_projected(n, screen)).decode(),
        }
        if screen == "s1":
            live |= {"displayStatus": "shown", "displayAckedAt": str(T0 + 500), "displayError": ""}
        await redis.hset(screen_key(keyspace, screen), mapping=live)
        log.live[screen] = live
    for n in (20, 21):
        trigger = {k: v for k, v in _identity(n, "s1").items() if k != "triggerEntryId"}
        await redis.xadd(
            keyspace.dead_letter,
            {
                "type": "trigger",
                "v": "1",
                "data": msgspec.json.encode({"id": trigger.pop("triggerId"), **trigger}),
                "sourceId": f"{T0 + n}-0",
                "reason": "max_deliveries",
                "error": "timed out",
                "deliveries": "5",
                "failedAt": str(T0 + n + 50),
            },
            id=f"{T0 + n}-1",
        )
    return log


async def _add_undecodable(redis: Redis, keyspace: Keyspace) -> None:
    await redis.xadd(
        keyspace.events,
        {"type": "trigger.rejected", "v": "1", "data": "{not json"},
        id=f"{T0 + 300}-0",
    )
    await redis.xadd(
        keyspace.dead_letter,
        {"type": "trigger", "v": "1", "data": "\xff{", "sourceId": "1-0", "reason": "poison"},
        id=f"{T0 + 300}-0",
    )


async def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, cwd=tmp_path, **env)


def _lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in result.stdout.splitlines()]


@pytest.fixture
def env(redis_url: str, keyspace: Keyspace) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}


async def test_tools_count_spec_only_events_exactly(
    redis: Redis, keyspace: Keyspace, env: dict[str, str], tmp_path: Path
) -> None:
    await _write_spec_only_log(redis, keyspace)

    stats = await _run(tmp_path, env, "stats", "--json")
    table = await _run(tmp_path, env, "stats")
    rejected = await _run(tmp_path, env, "replay", "--type", "trigger.rejected")
    rebuilt = await _run(tmp_path, env, "replay", "rebuild", "--json")
    dead = await _run(tmp_path, env, "dlq", "list")

    assert stats.returncode == 0, stats.stderr
    report = msgspec.json.decode(stats.stdout)
    assert report["overall"]["outcomes"] == {"projected": 5, "rejected": 4, "dead_lettered": 2}
    assert report["screens"]["s1"]["outcomes"] == {
        "projected": 3,
        "rejected": 0,
        "dead_lettered": 2,
    }
    assert report["screens"]["s2"]["outcomes"] == {
        "projected": 2,
        "rejected": 4,
        "dead_lettered": 0,
    }
    assert report["overall"]["latencyMs"]["shown"]["count"] == 1
    assert report["eventsRead"] == 12
    assert report["eventsSkipped"] == 0
    assert stats.stderr == ""
    assert "12 read, 0 undecodable" in table.stdout
    assert rejected.returncode == 0, rejected.stderr
    assert [line["data"]["triggerId"] for line in _lines(rejected)] == [
        "t10",
        "t11",
        "t12",
        "t13",
    ]
    assert rejected.stderr == ""
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    body = msgspec.json.decode(rebuilt.stdout)
    assert (body["events"], body["screens"], body["undecodable"]) == (12, 2, 0)
    assert body["differences"] == []
    assert dead.returncode == 0, dead.stderr
    assert [(line["id"], line["deliveries"], line["data"]["id"]) for line in _lines(dead)] == [
        (f"{T0 + 20}-1", 5, "t20"),
        (f"{T0 + 21}-1", 5, "t21"),
    ]
    assert dead.stderr == ""


async def test_tools_report_the_entries_they_could_not_decode(
    redis: Redis, keyspace: Keyspace, env: dict[str, str], tmp_path: Path
) -> None:
    await _write_spec_only_log(redis, keyspace)
    await _add_undecodable(redis, keyspace)

    stats = await _run(tmp_path, env, "stats", "--json")
    table = await _run(tmp_path, env, "stats")
    rejected = await _run(tmp_path, env, "replay", "--type", "trigger.rejected")
    on_screen = await _run(
        tmp_path, env, "replay", "--type", "trigger.rejected", "--screen", "s2", "--format", "csv"
    )
    rebuilt_json = await _run(tmp_path, env, "replay", "rebuild", "--json")
    rebuilt = await _run(tmp_path, env, "replay", "rebuild")
    dead = await _run(tmp_path, env, "dlq", "list")

    report = msgspec.json.decode(stats.stdout)
    assert report["overall"]["outcomes"] == {"projected": 5, "rejected": 4, "dead_lettered": 2}
    assert (report["eventsRead"], report["eventsSkipped"]) == (13, 1)
    assert "1 of 13 events could not be decoded" in stats.stderr
    assert "13 read, 1 undecodable" in table.stdout
    assert "1 of 13" in table.stderr

    lines = _lines(rejected)
    assert len(lines) == 5
    assert lines[-1]["data"] is None
    assert lines[-1]["rawData"] == "{not json"
    assert rejected.stderr.splitlines() == [
        "rdisplay: 1 entry could not be decoded: 1 written with decodeError and rawData"
    ]
    assert len(on_screen.stdout.splitlines()) == 1 + 4  # header + s2's four rejections
    assert "1 left out by --screen" in on_screen.stderr

    body = msgspec.json.decode(rebuilt_json.stdout)
    assert (body["events"], body["undecodable"], body["differences"]) == (13, 1, [])
    assert rebuilt_json.returncode == 0
    assert "13 events (1 undecodable, left out)" in rebuilt.stdout
    assert "1 of 13 events could not be decoded" in rebuilt.stderr

    listed = _lines(dead)
    assert len(listed) == 3
    assert "decodeError" in listed[-1]
    assert listed[-1]["data"] is None
    assert "1 of 3 entries have data that could not be decoded" in dead.stderr
