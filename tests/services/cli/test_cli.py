"""The real `rdisplay` console script, run as a subprocess with a controlled environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from streams.keys import Keyspace
from tests.helpers import append_trigger, free_port, read_stream, trigger, wait_for_events

RDISPLAY = Path(sys.executable).parent / "rdisplay"

# Every variable of SPEC section 3: the test process's own values must not leak in.
CONFIG_VARIABLES = frozenset(
    {
        "SOCKET_IO_HOST",
        "SOCKET_IO_PORT",
        "REDIS_URL",
        "DATA_DIR",
        "APP_ENV",
        "JWT_SECRET",
        "JWT_REFRESH_SECRET",
        "ALLOWED_ORIGINS",
        "RATE_LIMIT_WINDOW",
        "RATE_LIMIT_MAX_REQUESTS",
        "ACK_TIMEOUT_MS",
        "MAX_DELIVERIES",
        "RETRY_BASE_MS",
        "RETRY_MAX_MS",
        "ORDER_API_URL",
        "ORDER_API_TOKEN",
        "ORDER_API_TIMEOUT_MS",
        "ORDERS_FILE",
        "DOCUMENT_URL_TEMPLATE",
        "STREAM_PREFIX",
        "STREAM_MAXLEN",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "PROMETHEUS_MULTIPROC_DIR",
    }
)


def cli_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in CONFIG_VARIABLES and not k.startswith("OTEL_")
    }
    env.update(overrides)
    return env


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RDISPLAY), *args],
        env=cli_env(**env),
        cwd=cwd,  # no `.env` there
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_script_is_installed() -> None:
    assert RDISPLAY.is_file(), f"{RDISPLAY} missing: install the project (pip install -e .)"


def test_bad_port_is_one_line(tmp_path: Path) -> None:
    result = run_cli("worker", cwd=tmp_path, SOCKET_IO_PORT="abc", REDIS_URL="redis://x:1/0")

    assert_one_line_error(result, "SOCKET_IO_PORT", "abc")


def test_worker_without_redis_url_is_one_line(tmp_path: Path) -> None:
    result = run_cli("worker", cwd=tmp_path)

    assert_one_line_error(result, "REDIS_URL")


def test_serve_in_production_without_redis_url_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        cwd=tmp_path,
        APP_ENV="production",
        JWT_SECRET="s" * 32,
        JWT_REFRESH_SECRET="r" * 32,
        DATA_DIR=str(tmp_path / "var"),
    )

    assert_one_line_error(result, "REDIS_URL")
    assert "s" * 32 not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before any embedded Valkey started


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SOCKET_IO_PORT=nope\n")

    result = run_cli("worker", cwd=tmp_path, REDIS_URL="redis://x:1/0")

    assert_one_line_error(result, "SOCKET_IO_PORT", "nope")


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("frobnicate", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: rdisplay" in result.stderr


# --- serve with its embedded Valkey ---------------------------------------------------------


class ServeProcess:
    """`rdisplay serve` in its own process group, its stderr read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, cwd: Path, **env: str) -> ServeProcess:
        proc = await asyncio.create_subprocess_exec(
            str(RDISPLAY),
            "serve",
            env=cli_env(**env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Its own group: a failed test can kill the embedded Valkey (a grandchild) too.
            start_new_session=True,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            with contextlib.suppress(msgspec.DecodeError):
                record = msgspec.json.decode(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    async def wait_for_log(self, message: str, *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.logs():
                if record.get("message") == message:
                    return record
            if self.proc.returncode is not None or self._reader.done():
                break
            await asyncio.sleep(0.05)
        output = "\n".join(self.lines)
        msg = f"no log {message!r} within {timeout} s (exit {self.proc.returncode}):\n{output}"
        raise AssertionError(msg)

    async def terminate(self, *, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        """Make sure nothing of this run is left: no-op after a clean `terminate`."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        # An embedded Valkey orphaned by a crash still holds the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def serve_and_connect(
    cwd: Path, data_dir: Path
) -> tuple[ServeProcess, Redis | None, list[str]]:
    """Start `serve`, then connect to the embedded Valkey URL it logged.

    Returns the client as None when start-up failed, so the caller's `finally` still owns
    the process.
    """
    serve = await ServeProcess.start(
        cwd, DATA_DIR=str(data_dir), LOG_FORMAT="json", SOCKET_IO_PORT=str(free_port())
    )
    try:
        record = await serve.wait_for_log("embedded valkey started", timeout=30)
    except AssertionError as exc:
        return serve, None, [str(exc)]
    url = record.get("url")
    assert isinstance(url, str), record
    assert url.startswith("redis://127.0.0.1:")
    return serve, Redis.from_url(url, socket_timeout=5), []


@pytest.mark.slow
async def test_serve_runs_embedded_valkey_and_persists_events(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    keyspace = Keyspace("rd")
    entry = trigger(order_id="CLI-1", screen_id="cli-screen")

    serve, redis, errors = await serve_and_connect(tmp_path, data_dir)
    try:
        assert redis is not None, errors
        try:
            await append_trigger(redis, keyspace, entry)
            events = await wait_for_events(redis, keyspace, 1, timeout=20)
        finally:
            await redis.aclose()
        assert [e.type for e in events] == ["trigger.projected"]
        assert events[0].data["triggerId"] == entry.id
        assert events[0].data["documentUrl"] == "/documents/CLI-1.pdf"

        assert await serve.terminate(timeout=10) == 0, "\n".join(serve.lines)
        assert any(r.get("message") == "embedded valkey stopped" for r in serve.logs())
    finally:
        await serve.kill()

    serve, redis, errors = await serve_and_connect(tmp_path, data_dir)
    try:
        assert redis is not None, errors
        try:
            after_restart = await read_stream(redis, keyspace.events)
        finally:
            await redis.aclose()
        assert [(e.id, e.type, e.data) for e in after_restart] == [
            (e.id, e.type, e.data) for e in events
        ]

        assert await serve.terminate(timeout=10) == 0, "\n".join(serve.lines)
    finally:
        await serve.kill()


@pytest.mark.slow
async def test_sigterm_right_after_valkey_start_still_exits_cleanly(tmp_path: Path) -> None:
    # The signal lands before (or while) the worker's event loop installs its handler.
    serve = await ServeProcess.start(
        tmp_path, DATA_DIR=str(tmp_path / "var"), LOG_FORMAT="json", SOCKET_IO_PORT=str(free_port())
    )
    try:
        await serve.wait_for_log("embedded valkey started", timeout=30)

        assert await serve.terminate(timeout=10) == 0, "\n".join(serve.lines)
        assert any(r.get("message") == "embedded valkey stopped" for r in serve.logs())
        assert not (tmp_path / "var" / "valkey" / "valkey.pid").exists()  # no orphan left
    finally:
        await serve.kill()


@pytest.mark.slow
async def test_commands_find_the_running_serve_through_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {"DATA_DIR": str(data_dir)}  # no REDIS_URL: as after `make run`

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, **env)

    serve, redis, errors = await serve_and_connect(tmp_path, data_dir)
    try:
        assert redis is not None, errors
        try:
            issued = await asyncio.to_thread(
                cli, "token", "issue", "--user", "u1", "--screen", "s1", "--role", "screen"
            )
            assert issued.returncode == 0, issued.stderr
            pair = msgspec.json.decode(issued.stdout)
            # Recorded in the running serve's store: its refresh token rotates there.
            assert [k async for k in redis.scan_iter(match="rd:refresh*")]
            stats = await asyncio.to_thread(cli, "stats", "--json")
            assert stats.returncode == 0, stats.stderr
            assert msgspec.json.decode(stats.stdout)["eventsRead"] == 0
            dlq = await asyncio.to_thread(cli, "dlq", "list")
            assert (dlq.returncode, dlq.stdout) == (0, ""), dlq.stderr
            # A second serve on the same DATA_DIR is refused, and the first one's store lives.
            second = await asyncio.to_thread(
                run_cli, "serve", cwd=tmp_path, SOCKET_IO_PORT=str(free_port()), **env
            )
            assert second.returncode == 1
            assert "another `rdisplay serve`" in second.stderr
            assert str(serve.proc.pid) in second.stderr
            assert await redis.ping()
        finally:
            await redis.aclose()
        assert pair["accessToken"]
        assert await serve.terminate(timeout=10) == 0, "\n".join(serve.lines)
    finally:
        await serve.kill()

    stopped = await asyncio.to_thread(cli, "token", "issue", "--user", "u1", "--screen", "s1")
    assert_one_line_error(stopped, "token issue needs REDIS_URL", str(data_dir), "make run")


@pytest.mark.slow
async def test_serve_on_a_taken_port_stops_cleanly_with_one_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = await ServeProcess.start(
            tmp_path, DATA_DIR=str(tmp_path / "var"), LOG_FORMAT="json", SOCKET_IO_PORT=str(port)
        )
        try:
            code = await asyncio.wait_for(serve.proc.wait(), 30)
            await asyncio.wait_for(serve._reader, 5)
        finally:
            await serve.kill()
    records = [msgspec.json.decode(line) for line in serve.lines]  # all JSON, no traceback
    assert code == 1
    errors = [r for r in records if r["level"] == "error"]
    # The edge's process says why (uvicorn) and what (its address); serve, that it stopped.
    assert [r["logger"] for r in errors] == ["uvicorn.error", "rdisplay", "rdisplay"]
    assert f"127.0.0.1:{port}" in errors[1]["message"]
    assert "edge process stopped while starting" in errors[2]["message"]
    assert not any("exception" in r for r in records)
    assert any(r["message"] == "embedded valkey stopped" for r in records)
    assert not (tmp_path / "var" / "valkey" / "valkey.pid").exists()  # no orphan left


def test_edge_without_redis_url_is_one_line(tmp_path: Path) -> None:
    result = run_cli("edge", cwd=tmp_path)

    assert_one_line_error(result, "edge needs REDIS_URL")


async def test_a_closed_stdout_ends_stats_silently(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes its table
    try:
        process = await asyncio.create_subprocess_exec(
            str(RDISPLAY),
            "stats",
            env=cli_env(REDIS_URL=redis_url, STREAM_PREFIX=keyspace.prefix),
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, err) == (0, b"")


@pytest.mark.slow
async def test_log_format_console_writes_lines_for_people(
    redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    worker = await asyncio.create_subprocess_exec(
        str(RDISPLAY),
        "worker",
        env=cli_env(REDIS_URL=redis_url, STREAM_PREFIX=keyspace.prefix, LOG_FORMAT="console"),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stderr is not None
    lines: list[str] = []
    try:
        while not any("consumer started" in line for line in lines):
            raw = await asyncio.wait_for(worker.stderr.readline(), 30)
            assert raw, "\n".join(lines)
            lines.append(raw.decode().rstrip("\n"))
    finally:
        worker.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(worker.communicate(), 15)
    lines += rest.decode().splitlines() if rest else []
    assert worker.returncode == 0
    started = next(line for line in lines if "consumer started" in line)
    # "12:00:01 INFO    streams.consumer: consumer started  stream=… group=projector …"
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO +streams\.consumer: consumer started  .*", started)
    assert f"stream={keyspace.triggers}" in started
    assert "group=projector" in started
    for line in lines:
        assert not line.startswith("{"), line  # no JSON in console format
