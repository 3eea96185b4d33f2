"""The README's quick start on a fresh copy of the checkout: `make run`, then the first scan.

Slow (the copy gets its own `.venv`, as a newcomer's clone does), so it runs in the slow tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def first_scan_block() -> str:
    match = re.search(r"<!-- first-scan -->\n```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "README.md lost its first-scan block (<!-- first-scan --> before ```sh)"
    return match.group(1)


def fresh_copy(target: Path) -> None:
    """The files a clone of this checkout has (tracked ones, as they are now): no .venv, no var."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing says which files a clone would have")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def newcomer_env(**extra: str) -> dict[str, str]:
    """The machine's environment without the project's settings: no REDIS_URL, no prefix."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"}
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    # `make` must find the machine's python3, not the suite's virtual environment.
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
        )
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_make_run_then_the_first_scan_works(tmp_path: Path) -> None:
    clone = tmp_path / "remote-display"
    fresh_copy(clone)
    port = free_port()
    run = await asyncio.create_subprocess_exec(
        "make",
        "run",
        cwd=clone,
        env=newcomer_env(SOCKET_IO_PORT=str(port)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # make, then rdisplay and its Valkey: stopped as one group
    )
    output: list[str] = []

    async def collect() -> None:
        assert run.stdout is not None
        async for line in run.stdout:
            output.append(line.decode(errors="replace").rstrip())

    reader = asyncio.create_task(collect())
    try:
        deadline = time.monotonic() + 600  # a fresh .venv: pip installs everything first
        healthy = False
        while not healthy and time.monotonic() < deadline and run.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/health") as response,
                ):
                    healthy = response.status == 200
            await asyncio.sleep(0.5)
        assert healthy, "make run did not serve /health:\n" + "\n".join(output[-40:])
        assert (clone / ".venv" / "bin" / "rdisplay").exists()

        snippet = first_scan_block().replace("127.0.0.1:3001", f"127.0.0.1:{port}")
        scan = await asyncio.create_subprocess_exec(
            "bash",
            "-euc",
            snippet,
            cwd=clone,
            env=newcomer_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(scan.communicate(), 120)
        assert scan.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            "ack: True /documents/ORDER-1001.pdf",
            "screen shows: /documents/ORDER-1001.pdf",
        ]
        # What the screen was told to show is there: `make run` serves the sample drawings.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/documents/ORDER-1001.pdf") as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/pdf"
            assert (await response.read()).startswith(b"%PDF-")
    finally:
        if run.returncode is None:
            os.killpg(run.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(run.wait(), 20)
            except TimeoutError:
                os.killpg(run.pid, signal.SIGKILL)
                await run.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # anything of the group still there
        await asyncio.wait_for(reader, 10)
    assert not (clone / "var" / "valkey" / "valkey.pid").exists(), "\n".join(output[-40:])
