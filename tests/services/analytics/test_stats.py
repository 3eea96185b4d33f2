"""`rdisplay stats`: outcome counts and nearest-rank latency percentiles over `rd:events`."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from redis.asyncio import Redis

from schemas import codec
from schemas.codes import ErrorCode
from schemas.entries import DisplayAckEntry
from schemas.errors import ConfigError
from schemas.events import (
    DisplayAcknowledged,
    Event,
    TriggerDeadLettered,
    TriggerProjected,
    TriggerRejected,
)
from services.analytics.stats import STAGES, StatsReport, collect_stats, nearest_rank
from services.cli.stats import _bound
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.helpers import append_trigger, now_ms, trigger, wait_for_events
from tests.services.cli.test_cli import RDISPLAY, assert_one_line_error, cli_env, run_cli

T0 = 1_700_000_000_000


def projected(
    trigger_id: str, screen: str, *, received: int, projected_ms: int, user: str = "u"
) -> TriggerProjected:
    return TriggerProjected(
        trigger_id=trigger_id,
        user_id=user,
        screen_id=screen,
        order_id="o",
        display_index=0,
        window_id="w",
        document_url="/d.pdf",
        trigger_entry_id="1-0",
        timestamp=T0,
        received_at=T0 + received,
        projected_at=T0 + received + projected_ms,
        deliveries=1,
    )


def rejected(trigger_id: str, screen: str, *, received: int, user: str = "u") -> TriggerRejected:
    return TriggerRejected(
        trigger_id=trigger_id,
        user_id=user,
        screen_id=screen,
        order_id="o",
        display_index=0,
        trigger_entry_id="1-0",
        timestamp=T0,
        received_at=T0 + received,
        rejected_at=T0 + received + 1,
        deliveries=1,
        code=ErrorCode.ORDER_NOT_FOUND,
        message="no such order",
    )


def dead_lettered(trigger_id: str, screen: str, *, received: int) -> TriggerDeadLettered:
    return TriggerDeadLettered(
        trigger_id=trigger_id,
        user_id="u",
        screen_id=screen,
        order_id="o",
        display_index=0,
        trigger_entry_id="1-0",
        timestamp=T0,
        received_at=T0 + received,
        failed_at=T0 + received + 1,
        deliveries=3,
        code=ErrorCode.DEAD_LETTERED,
        message="order service down",
        dead_letter_id="9-0",
    )


def ack(
    event_id: str, screen: str, *, acked_at: int, status: Literal["shown", "failed"] = "shown"
) -> DisplayAcknowledged:
    return DisplayAcknowledged(
        trigger_id="t",
        event_id=event_id,
        screen_id=screen,
        status=status,
        acked_at=acked_at,
        display_ack_entry_id="1-0",
        acknowledged_at=acked_at + 1,
    )


class EventLog:
    """Writes events at explicit, increasing entry ids, so ranges are exact."""

    def __init__(self, redis: Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.stream = keyspace.events
        self.ms = 1000

    async def add(self, event: Event, *, entry_id: str | None = None) -> str:
        if entry_id is None:
            self.ms += 1
            entry_id = f"{self.ms}-0"
        await self.redis.xadd(self.stream, codec.event_fields(event), id=entry_id)
        return entry_id


def latency(report: StatsReport, stage: str, screen: str | None = None) -> tuple[Any, ...]:
    summary = report.overall if screen is None else report.screens[screen]
    value = summary.latency_ms[stage]
    return (value.p50, value.p95, value.p99, value.count)


def outcomes(report: StatsReport, screen: str | None = None) -> tuple[int, int, int]:
    summary = report.overall if screen is None else report.screens[screen]
    counts = summary.outcomes
    return (counts.projected, counts.rejected, counts.dead_lettered)


# --- nearest rank ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "percent", "expected"),
    [
        pytest.param(list(range(1, 101)), 50, 50, id="1..100-p50"),
        pytest.param(list(range(1, 101)), 95, 95, id="1..100-p95"),
        pytest.param(list(range(1, 101)), 99, 99, id="1..100-p99"),
        pytest.param(list(range(1, 101)), 100, 100, id="1..100-p100"),
        pytest.param(list(range(1, 11)), 95, 10, id="1..10-p95-rounds-up"),
        pytest.param(list(range(1, 11)), 50, 5, id="1..10-p50"),
        pytest.param([7], 1, 7, id="one-sample"),
        pytest.param([], 50, None, id="no-samples"),
    ],
)
def test_nearest_rank(samples: list[int], percent: int, expected: int | None) -> None:
    assert nearest_rank(samples, percent) == expected


@pytest.mark.parametrize("percent", [0, 101, -5])
def test_nearest_rank_refuses_a_percent_outside_0_100(percent: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        nearest_rank([1, 2], percent)


# --- counts and percentiles on a real stream -------------------------------------------------


async def test_counts_each_trigger_once_and_gives_nearest_rank_percentiles(
    redis: Redis, keyspace: Keyspace
) -> None:
    log = EventLog(redis, keyspace)
    # Screen s1: 100 triggers, trigger i with received i, projected 10·i, shown i (total 12·i).
    for i in range(1, 101):
        event_id = await log.add(projected(f"a{i}", "s1", received=i, projected_ms=10 * i))
        await log.add(ack(event_id, "s1", acked_at=T0 + 12 * i))
    # Screen s2: a trigger dead-lettered, then projected after a redrive: counted once, projected.
    await log.add(dead_lettered("tA", "s2", received=1000))
    redriven = await log.add(projected("tA", "s2", received=5, projected_ms=7))
    await log.add(ack(redriven, "s2", acked_at=T0 + 15))
    await log.add(ack(redriven, "s2", acked_at=T0 + 500))  # a re-display: the first one counts
    await log.add(rejected("tB", "s2", received=2))
    await log.add(rejected("tC", "s2", received=4))
    failed = await log.add(projected("tD", "s2", received=1, projected_ms=1))
    await log.add(ack(failed, "s2", acked_at=T0 + 50, status="failed"))
    await log.add(dead_lettered("tE", "s2", received=6))
    # The same trigger id from another user is another trigger.
    await log.add(rejected("tB", "s3", received=3, user="v"))
    await log.add(ack("1-0", "s2", acked_at=T0))  # a projection outside the range: ignored
    await redis.xadd(keyspace.events, {"type": "bogus", "v": "1", "data": "{}"}, id="9000-0")

    report = await collect_stats(redis, keyspace.events, page_size=7)

    assert report is not None
    assert outcomes(report, "s1") == (100, 0, 0)
    assert latency(report, "received", "s1") == (50, 95, 99, 100)
    assert latency(report, "projected", "s1") == (500, 950, 990, 100)
    assert latency(report, "shown", "s1") == (50, 95, 99, 100)
    assert latency(report, "total", "s1") == (600, 1140, 1188, 100)

    assert outcomes(report, "s2") == (2, 2, 1)
    # received [1, 2, 4, 5, 6] (tA's dead-lettered 1000 was replaced): ranks 3, 5, 5
    assert latency(report, "received", "s2") == (4, 6, 6, 5)
    assert latency(report, "projected", "s2") == (1, 7, 7, 2)
    assert latency(report, "shown", "s2") == (3, 3, 3, 1)
    assert latency(report, "total", "s2") == (15, 15, 15, 1)

    assert outcomes(report, "s3") == (0, 1, 0)
    assert latency(report, "shown", "s3") == (None, None, None, 0)

    assert outcomes(report) == (102, 3, 1)
    # received: 1..100 with [1, 2, 3, 4, 5, 6] — n = 106, ranks 53, 101, 105
    assert latency(report, "received") == (47, 95, 99, 106)
    # projected: 10, 20, …, 1000 with [1, 7] — n = 102, ranks 51, 97, 101
    assert latency(report, "projected") == (490, 950, 990, 102)
    # shown: 1..100 with [3] — n = 101, ranks 51, 96, 100
    assert latency(report, "shown") == (50, 95, 99, 101)
    assert latency(report, "total") == (600, 1140, 1188, 101)

    assert sorted(report.screens) == ["s1", "s2", "s3"]
    assert report.events_read == 100 * 2 + 11 + 1
    assert report.events_skipped == 1


async def test_a_later_outcome_drops_the_acks_of_the_replaced_projection(
    redis: Redis, keyspace: Keyspace
) -> None:
    log = EventLog(redis, keyspace)
    first = await log.add(projected("t", "s1", received=1, projected_ms=1))
    await log.add(rejected("t", "s1", received=1))
    await log.add(ack(first, "s1", acked_at=T0 + 10))

    report = await collect_stats(redis, keyspace.events)

    assert report is not None
    assert outcomes(report) == (0, 1, 0)
    assert latency(report, "shown") == (None, None, None, 0)
    assert latency(report, "projected") == (None, None, None, 0)


async def test_triggers_without_a_screen_count_overall_only(
    redis: Redis, keyspace: Keyspace
) -> None:
    log = EventLog(redis, keyspace)
    await log.add(rejected("t1", "", received=1))
    await log.add(rejected("t2", "s1", received=1))

    report = await collect_stats(redis, keyspace.events)

    assert report is not None
    assert outcomes(report) == (0, 2, 0)
    assert list(report.screens) == ["s1"]


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, 1000])
@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        pytest.param(None, None, ["a", "b", "c", "d"], id="everything"),
        pytest.param("1000-1", None, ["b", "c", "d"], id="since-is-inclusive"),
        pytest.param("2000", None, ["c", "d"], id="since-ms-alone"),
        pytest.param(None, "3000-0", ["a", "b", "c"], id="until-is-exclusive"),
        pytest.param("1000-1", "3000-0", ["b", "c"], id="both"),
        pytest.param(None, "1000-1", ["a"], id="until-inside-one-ms"),
        pytest.param("3000-1", None, [], id="past-the-end"),
        pytest.param(None, "0-0", [], id="until-the-first-id"),
        pytest.param("2000-0", "2000-0", [], id="empty-interval"),
    ],
)
async def test_range_bounds(
    redis: Redis,
    keyspace: Keyspace,
    since: str | None,
    until: str | None,
    expected: list[str],
    page_size: int,
) -> None:
    log = EventLog(redis, keyspace)
    for name, entry_id in [("a", "1000-0"), ("b", "1000-1"), ("c", "2000-0"), ("d", "3000-0")]:
        await log.add(rejected(name, f"s-{name}", received=1), entry_id=entry_id)

    report = await collect_stats(
        redis, keyspace.events, since=since, until=until, page_size=page_size
    )

    assert report is not None
    assert sorted(report.screens) == [f"s-{name}" for name in expected]
    assert report.events_read == len(expected)
    assert msgspec.to_builtins(report.range) == {"since": since, "until": until}


async def test_empty_range_is_zeros_and_nulls(redis: Redis, keyspace: Keyspace) -> None:
    report = await collect_stats(redis, keyspace.events)  # the stream does not exist

    assert report is not None
    assert msgspec.to_builtins(report)["overall"] == {
        "outcomes": {"projected": 0, "rejected": 0, "dead_lettered": 0},
        "latencyMs": {
            stage: {"p50": None, "p95": None, "p99": None, "count": 0} for stage in STAGES
        },
    }
    assert report.screens == {}


async def test_stop_between_pages_returns_none(redis: Redis, keyspace: Keyspace) -> None:
    log = EventLog(redis, keyspace)
    for i in range(5):
        await log.add(rejected(f"t{i}", "s", received=1))
    pages: list[int] = []

    report = await collect_stats(
        redis, keyspace.events, page_size=2, progress=pages.append, stop=lambda: bool(pages)
    )

    assert report is None
    assert pages == [2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("1700000000000-5", "1700000000000-5", id="entry-id"),
        pytest.param("1700000000000", "1700000000000-0", id="ms-alone"),
        pytest.param("2023-11-14T22:13:20Z", "1700000000000-0", id="iso-utc"),
        pytest.param("2023-11-14T22:13:20", "1700000000000-0", id="naive-is-utc"),
        pytest.param("2023-11-14", "1699920000000-0", id="date-alone"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_bound(raw: str | None, expected: str | None) -> None:
    assert _bound(raw, "--since") == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("yesterday", id="words"),
        pytest.param("12-ab", id="bad-seq"),
        pytest.param("1969-12-31T23:59:59Z", id="before-1970"),
        pytest.param(str(2**64), id="ms-too-large"),
    ],
)
def test_bad_bound_is_a_usage_error_naming_the_option(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^--until: "):
        _bound(raw, "--until")


# --- the real command ------------------------------------------------------------------------


async def test_cli_stats_end_to_end(
    redis: Redis,
    keyspace: Keyspace,
    redis_url: str,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    tmp_path: Path,
) -> None:
    await workers.start(make_settings())
    entries = [trigger(order_id=f"O-{i}", screen_id=f"s{i % 2}") for i in range(3)]
    for entry in entries:
        await append_trigger(redis, keyspace, entry)
    events = await wait_for_events(redis, keyspace, 3)
    first = next(e for e in events if e.data["triggerId"] == entries[0].id)
    shown = DisplayAckEntry(
        trigger_id=entries[0].id,
        event_id=first.id,
        screen_id="s0",
        status="shown",
        acked_at=now_ms(),
    )
    await redis.xadd(keyspace.triggers, codec.entry_fields(shown))
    await wait_for_events(redis, keyspace, 4)
    env = {"REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}

    result = await asyncio.to_thread(run_cli, "stats", "--json", cwd=tmp_path, **env)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress: stderr is not a terminal
    report = msgspec.json.decode(result.stdout)
    assert {"overall", "screens"} <= report.keys()
    assert report["overall"]["outcomes"] == {"projected": 3, "rejected": 0, "dead_lettered": 0}
    assert sorted(report["screens"]) == ["s0", "s1"]
    assert report["screens"]["s0"]["outcomes"]["projected"] == 2
    assert report["screens"]["s1"]["outcomes"]["projected"] == 1
    for summary in [report["overall"], *report["screens"].values()]:
        assert set(summary) == {"outcomes", "latencyMs"}
        assert set(summary["latencyMs"]) == {"received", "projected", "shown", "total"}
        for stage in summary["latencyMs"].values():
            assert set(stage) == {"p50", "p95", "p99", "count"}
    overall = report["overall"]["latencyMs"]
    assert overall["received"]["count"] == 3
    assert overall["projected"]["count"] == 3
    assert overall["shown"]["count"] == 1
    assert overall["total"]["count"] == 1
    assert overall["shown"]["p50"] is not None
    assert report["screens"]["s1"]["latencyMs"]["shown"]["p50"] is None

    # The range: before the first event (ISO time), until the ack's event (exclusive).
    last_id = (await redis.xrevrange(keyspace.events, count=1))[0][0].decode()
    ranged = await asyncio.to_thread(
        run_cli, "stats", "--json", "--since", "2020-01-01", "--until", last_id, cwd=tmp_path, **env
    )
    assert ranged.returncode == 0, ranged.stderr
    assert msgspec.json.decode(ranged.stdout)["overall"]["latencyMs"]["shown"]["count"] == 0

    table = await asyncio.to_thread(run_cli, "stats", cwd=tmp_path, **env)

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("screen"))
    assert lines[header].split()[:4] == ["screen", "projected", "rejected", "dead_lettered"]
    assert [line.split()[:4] for line in lines[header + 1 :]] == [
        ["(overall)", "3", "0", "0"],
        ["s0", "2", "0", "0"],
        ["s1", "1", "0", "0"],
    ]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--since", "nope"], id="since"),
        pytest.param(["--until", "2024-13-45"], id="until"),
    ],
)
def test_cli_bad_bound_is_one_line(tmp_path: Path, redis_url: str, args: list[str]) -> None:
    result = run_cli("stats", *args, cwd=tmp_path, REDIS_URL=redis_url)

    assert_one_line_error(result, args[0], args[1])


def test_cli_stats_needs_redis_url(tmp_path: Path) -> None:
    result = run_cli("stats", cwd=tmp_path)

    assert_one_line_error(result, "REDIS_URL")


async def test_cli_progress_goes_to_a_terminal_stderr_only(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    log = EventLog(redis, keyspace)
    for i in range(3):
        await log.add(rejected(f"t{i}", "s", received=1))
    env = cli_env(REDIS_URL=redis_url, STREAM_PREFIX=keyspace.prefix)
    controller, terminal = pty.openpty()
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(RDISPLAY), "stats", "--json"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        shown = _read_all(controller)
    finally:
        os.close(controller)

    assert result.returncode == 0
    assert msgspec.json.decode(result.stdout)["overall"]["outcomes"]["rejected"] == 3
    assert b"stats: 3 events read" in shown
    assert shown.endswith(b"\r\x1b[K")  # the progress line is erased at the end


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every writer of the terminal is gone
            return out
        if not chunk:
            return out
        out += chunk
