"""The real `rdisplay replay` command: formats, filters, ranges, a closed pipe, retention."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import pty
import shlex
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from schemas import codec
from schemas.codes import ErrorCode
from schemas.events import Event, TriggerProjected, TriggerRejected
from streams.keys import Keyspace
from tests.services.cli.test_cli import RDISPLAY, assert_one_line_error, cli_env, run_cli

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def projected(n: int, screen: str) -> TriggerProjected:
    return TriggerProjected(
        trigger_id=f"t{n}",
        user_id="user-1",
        screen_id=screen,
        order_id=f"ORD-{n}",
        display_index=0,
        window_id="w-1",
        document_url=f'/documents/ORD-{n}.pdf?q="x",y',  # quotes and commas for CSV
        trigger_entry_id=f"{T0 + n}-0",
        timestamp=T0 + n,
        received_at=T0 + n + 1,
        projected_at=T0 + n + 5,
        deliveries=1,
    )


def rejected(n: int, screen: str) -> TriggerRejected:
    return TriggerRejected(
        trigger_id=f"t{n}",
        user_id="user-1",
        screen_id=screen,
        order_id=f"ORD-{n}",
        display_index=0,
        trigger_entry_id=f"{T0 + n}-0",
        timestamp=T0 + n,
        received_at=T0 + n + 1,
        rejected_at=T0 + n + 2,
        deliveries=1,
        code=ErrorCode.ORDER_NOT_FOUND,
        message="no such order, sorry\nsecond line",
    )


def event(n: int) -> Event:
    screen = f"s{n % 3}"
    return rejected(n, screen) if n % 4 == 3 else projected(n, screen)


async def fill_events(redis: Redis, stream: str, count: int) -> list[str]:
    """`count` events at ids `T0 + n`-0, so ISO times and ids address them exactly."""
    ids = [f"{T0 + n}-0" for n in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for n, ident in enumerate(ids):
            pipe.xadd(stream, codec.event_fields(event(n)), id=ident)
        await pipe.execute()
    return ids


def env_for(redis_url: str, keyspace: Keyspace, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix, **extra}


async def replay(
    tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "replay", *args, cwd=tmp_path, **env)


def jsonl(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [msgspec.json.decode(line) for line in result.stdout.splitlines()]


async def test_jsonl_and_csv_round_trip(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    ids = await fill_events(redis, keyspace.events, 250)
    env = env_for(redis_url, keyspace)

    as_jsonl = await replay(tmp_path, env, "--page-size", "7")
    as_csv = await replay(tmp_path, env, "--format", "csv", "--page-size", "7")

    lines = jsonl(as_jsonl)
    assert as_jsonl.stderr == ""  # no progress: stderr is not a terminal; nothing trimmed
    assert [line["id"] for line in lines] == ids
    assert lines[3] == {
        "id": ids[3],
        "type": "trigger.rejected",
        "v": 1,
        "data": msgspec.to_builtins(rejected(3, "s0")),
    }
    assert [line["data"] for line in lines] == [msgspec.to_builtins(event(n)) for n in range(250)]
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.splitlines()[0] == "id,type,v,data"
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout, newline="")))
    assert [
        {"id": r["id"], "type": r["type"], "v": int(r["v"]), "data": msgspec.json.decode(r["data"])}
        for r in rows
    ] == lines


async def test_screen_type_and_range_filters(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    ids = await fill_events(redis, keyspace.events, 120)
    env = env_for(redis_url, keyspace)

    screen = jsonl(await replay(tmp_path, env, "--screen", "s1"))
    kind = jsonl(await replay(tmp_path, env, "--type", "trigger.rejected"))
    kinds = jsonl(
        await replay(tmp_path, env, "--type", "trigger.rejected,trigger.projected", "--type", "x")
    )
    both = jsonl(
        await replay(
            tmp_path, env, "--screen", "s2", "--type", "trigger.projected", "--format", "jsonl"
        )
    )
    by_id = jsonl(await replay(tmp_path, env, "--since", ids[10], "--until", ids[20]))
    by_time = jsonl(
        await replay(
            tmp_path,
            env,
            "--since",
            "2023-11-14T22:13:20.010Z",
            "--until",
            "2023-11-15T00:13:20.020+02:00",
        )
    )
    by_ms = jsonl(await replay(tmp_path, env, f"--since={T0 + 100}", f"--until={T0 + 103}"))

    assert [line["id"] for line in screen] == [ids[n] for n in range(120) if n % 3 == 1]
    assert all(line["data"]["screenId"] == "s1" for line in screen)
    assert [line["id"] for line in kind] == [ids[n] for n in range(120) if n % 4 == 3]
    assert [line["id"] for line in kinds] == ids
    assert [line["id"] for line in both] == [
        ids[n] for n in range(120) if n % 3 == 2 and n % 4 != 3
    ]
    assert [line["id"] for line in by_id] == ids[10:20]
    assert [line["id"] for line in by_time] == ids[10:20]
    assert [line["id"] for line in by_ms] == ids[100:103]


async def test_dead_letter_lines_carry_the_added_fields(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    await redis.xadd(
        keyspace.dead_letter,
        {
            "type": "trigger",
            "v": "1",
            "data": '{"id": "t1", "screenId": "s1"}',
            "sourceId": "5-0",
            "reason": "max_deliveries",
            "error": "order service timed out",
            "deliveries": "3",
            "failedAt": "1700000000123",
        },
        id="7-0",
    )
    await redis.xadd(
        keyspace.dead_letter,
        {"type": "trigger", "v": "9", "data": "{oops", "sourceId": "6-0", "reason": "poison"},
        id="8-0",
    )
    env = env_for(redis_url, keyspace)

    lines = jsonl(await replay(tmp_path, env, "--stream", "dead-letter"))
    as_csv = await replay(tmp_path, env, "--stream", "dead-letter", "--format", "csv")

    assert lines[0] == {
        "id": "7-0",
        "type": "trigger",
        "v": 1,
        "data": {"id": "t1", "screenId": "s1"},
        "sourceId": "5-0",
        "reason": "max_deliveries",
        "error": "order service timed out",
        "deliveries": 3,
        "failedAt": 1700000000123,
    }
    assert lines[1]["data"] is None
    assert lines[1]["v"] == 9
    assert lines[1]["rawData"] == "{oops"
    assert "malformed" in lines[1]["decodeError"]
    assert lines[1]["sourceId"] == "6-0"
    assert as_csv.stdout.splitlines() == [
        "id,type,v,data",
        '7-0,trigger,1,"{""id"": ""t1"", ""screenId"": ""s1""}"',
        "8-0,trigger,9,",
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_a_closed_pipe_ends_silently(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path, fmt: str
) -> None:
    await fill_events(redis, keyspace.events, 20_000)  # several MB: more than a pipe holds
    env = cli_env(**env_for(redis_url, keyspace))
    command = f"{shlex.quote(str(RDISPLAY))} replay --format {fmt} --page-size 100 | head -n 1"

    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", f"set -o pipefail; {command}"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


async def test_a_reader_closing_early_ends_the_command_with_0(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    await fill_events(redis, keyspace.events, 20_000)
    env = cli_env(**env_for(redis_url, keyspace))

    first, returncode, stderr = await asyncio.to_thread(
        _read_one_line_then_close, [str(RDISPLAY), "replay", "--page-size", "50"], env, tmp_path
    )

    assert msgspec.json.decode(first)["id"] == f"{T0}-0"
    assert returncode == 0
    assert stderr == b""


async def test_warns_when_the_range_starts_before_the_oldest_retained_entry(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(500):
            pipe.xadd(
                keyspace.events,
                codec.event_fields(event(n)),
                id=f"{T0 + n}-0",
                maxlen=100,
                approximate=False,
            )
        await pipe.execute()
    env = env_for(redis_url, keyspace, STREAM_MAXLEN="100")

    early = await replay(tmp_path, env, "--since", "2023-11-14")
    everything = await replay(tmp_path, env)
    retained = await replay(tmp_path, env, "--since", f"{T0 + 400}")

    warning = (
        f"rdisplay: range starts before the oldest retained entry {T0 + 400}-0 (STREAM_MAXLEN=100)"
    )
    assert early.stderr.splitlines() == [warning]
    assert everything.stderr.splitlines() == [warning]
    assert [line["id"] for line in jsonl(early)] == [f"{T0 + n}-0" for n in range(400, 500)]
    assert retained.stderr == ""
    assert len(jsonl(retained)) == 100


async def test_no_warning_for_a_stream_that_never_dropped_an_entry(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    await fill_events(redis, keyspace.events, 5)

    result = await replay(tmp_path, env_for(redis_url, keyspace), "--since", "2020-01-01")

    assert result.stderr == ""
    assert len(jsonl(result)) == 5


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--since", "yesterday"], id="since-words"),
        pytest.param(["--until", "2024-13-45"], id="until-bad-date"),
        pytest.param(["--since", "1969-12-31"], id="since-before-1970"),
        pytest.param(["--since=12-ab"], id="since-bad-id"),
    ],
)
def test_bad_bound_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    # No Redis needed: the bounds are checked first (this URL does not answer).
    result = run_cli("replay", *args, cwd=tmp_path, REDIS_URL="redis://127.0.0.1:1/0")

    option, _, value = args[0].partition("=")
    assert_one_line_error(result, option, value or args[1])


def test_replay_needs_redis_url(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("replay", cwd=tmp_path), "REDIS_URL")


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    for args in (["--stream", "orders"], ["--format", "xml"], ["--page-size", "0"]):
        result = run_cli("replay", *args, cwd=tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
        assert result.returncode == 2
        assert result.stdout == ""
        assert "Traceback" not in result.stderr


def test_replay_rebuild_is_a_subcommand(tmp_path: Path) -> None:
    result = run_cli("replay", "rebuild", "--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "--apply" in result.stdout
    assert "--json" in result.stdout


async def test_progress_goes_to_a_terminal_stderr_only(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    await fill_events(redis, keyspace.events, 30)
    controller, terminal = pty.openpty()
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(RDISPLAY), "replay", "--screen", "s0"],
            env=cli_env(**env_for(redis_url, keyspace)),
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
    assert len(result.stdout.splitlines()) == 10
    assert shown.startswith(b"\rreplay: 10 written of 30 read")
    assert shown.endswith(b"\r\n")  # the final line is kept, the terminal's newline after it


def _read_one_line_then_close(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[bytes, int, bytes]:
    with subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        returncode = process.wait(60)
        return first, returncode, process.stderr.read()


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
