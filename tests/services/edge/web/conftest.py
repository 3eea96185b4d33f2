"""The pages' fixtures: a real `rdisplay serve` (edge and worker processes) and Debian's chromium.

`serve` runs on the session's store (REDIS_URL, or the suite's embedded Valkey) under the
test's own key prefix, with DOCUMENTS_DIR a copy of the samples plus a corrupt PDF and an
image. It can be stopped (SIGTERM), killed (SIGKILL to its whole process group: the edge dies
with no shutdown code) and started again on the same port and store. Screenshots go to
`var/artifacts/browser/` (ARTIFACTS_DIR overrides).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from redis.asyncio import Redis

from services.config.jwt_keys import JwtSecrets
from services.edge.tokens import Role, TokenPair, TokenService
from streams.keys import Keyspace
from tests.conftest import SettingsFactory
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, RunningEdge, mint, running_edge
from tests.helpers import free_port, read_stream

ROOT = Path(__file__).resolve().parents[4]
RDISPLAY = str(Path(sys.executable).with_name("rdisplay"))
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "var" / "artifacts")) / "browser"
# A 1x1 PNG: an image document.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e5273de90000000049454e44ae426082"
)


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("the browser tests need Chromium: apt-get install -y chromium (make browser)")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            await browser.close()


class Site:
    """One deployment: `rdisplay serve` on a fixed port and a store, restartable."""

    def __init__(self, redis_url: str, redis: Redis, keyspace: Keyspace, workdir: Path) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.documents = workdir / "documents"
        shutil.copytree(ROOT / "samples" / "documents", self.documents)
        (self.documents / "X-CORRUPT-1.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF at all\n")
        (self.documents / "X-PHOTO-1.png").write_bytes(PNG)
        self.workdir = workdir
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": keyspace.prefix,
            "DATA_DIR": str(workdir / "var"),
            "SOCKET_IO_PORT": str(self.port),
            "JWT_SECRET": ACCESS_SECRET,
            "JWT_REFRESH_SECRET": REFRESH_SECRET,
            "DOCUMENTS_DIR": str(self.documents),
            "LOG_LEVEL": "warning",
        }
        self.tokens = TokenService(
            secrets=JwtSecrets(access=ACCESS_SECRET, refresh=REFRESH_SECRET),
            redis=redis,
            keyspace=keyspace,
        )
        self.process: asyncio.subprocess.Process | None = None
        self._starts = 0

    async def start(self) -> None:
        self._starts += 1
        log = (self.workdir / f"serve-{self._starts}.log").open("wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                RDISPLAY,
                "serve",
                env=self.env,
                cwd=self.workdir,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group: kill() takes the children too
            )
        finally:
            log.close()
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process.returncode is not None:
                    msg = f"rdisplay serve exited with {self.process.returncode}: {self.workdir}"
                    raise RuntimeError(msg)
                try:
                    async with http.get(f"{self.url}/health") as response:
                        if response.status == 200 and await self._worker_ready():
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    msg = f"rdisplay serve did not become ready: {self.workdir}"
                    raise RuntimeError(msg)
                await asyncio.sleep(0.1)

    async def _worker_ready(self) -> bool:
        try:
            groups = await self.redis.xinfo_groups(self.keyspace.triggers)
        except Exception:  # the stream does not exist before the worker made its group
            return False
        return any(group["consumers"] for group in groups)

    async def stop(self) -> None:
        """SIGTERM: the edge and worker shut down as in production."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 15)

    async def kill(self) -> None:
        """SIGKILL to the whole group: edge, worker and supervisor die without a word."""
        if self.process is not None and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        await asyncio.sleep(0.2)  # the children are gone too once their group is

    def admin_token(self) -> str:
        return mint("ops", "ops", "admin")

    async def issue(self, role: Role, screen: str, *, ttl: int = 900) -> TokenPair:
        return await self.tokens.issue_pair(f"{role}-{screen}", screen, role, ttl_s=ttl)

    async def approve(self, code: str, screen: str, token: str | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/api/pair/approve",
                json={"code": code, "screenId": screen},
                headers={"Authorization": f"Bearer {token or self.admin_token()}"},
            ) as response,
        ):
            return response.status, await response.json()

    async def display_acks(self) -> list[dict[str, Any]]:
        """The `display_ack` entries of rd:triggers, oldest first (their data)."""
        entries = await read_stream(self.redis, self.keyspace.triggers)
        return [e.data for e in entries if e.type == "display_ack"]

    async def acks_for(self, event_id: str, timeout_s: float = 10) -> list[dict[str, Any]]:
        """The display acks of `event_id`, once there is one."""
        deadline = time.monotonic() + timeout_s
        while True:
            acks = [a for a in await self.display_acks() if a["eventId"] == event_id]
            if acks:
                return acks
            if time.monotonic() > deadline:
                msg = f"no display_ack for {event_id} within {timeout_s} s"
                raise AssertionError(msg)
            await asyncio.sleep(0.05)

    async def restart(self, **env: str) -> None:
        await self.stop()
        self.env.update(env)
        await self.start()

    async def triggers_with_id(self, trigger_id: str) -> int:
        entries = await read_stream(self.redis, self.keyspace.triggers)
        return sum(1 for e in entries if e.type == "trigger" and e.data.get("id") == trigger_id)


@pytest.fixture
async def site(
    redis_url: str, redis: Redis, keyspace: Keyspace, tmp_path: Path
) -> AsyncIterator[Site]:
    site = Site(redis_url, redis, keyspace, tmp_path)
    await site.start()
    try:
        yield site
    finally:
        try:
            await site.stop()
        except TimeoutError:
            await site.kill()


@pytest.fixture
async def contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    """Fresh browser profiles (one per device); closed after the test."""
    made: list[BrowserContext] = []
    try:
        yield made
    finally:
        for context in made:
            await context.close()


async def new_page(
    contexts: list[BrowserContext],
    browser: Browser,
    width: int = 1280,
    height: int = 720,
    *,
    service_workers: Literal["allow", "block"] = "allow",
) -> Page:
    """A page in a profile of its own. A test that routes requests blocks the kiosk's service
    worker: Playwright does not see the requests a service worker makes."""
    context = await browser.new_context(
        viewport={"width": width, "height": height}, service_workers=service_workers
    )
    contexts.append(context)
    page = await context.new_page()
    errors = _PAGE_ERRORS.setdefault(page, [])
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


_PAGE_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def page_errors(page: Page) -> list[str]:
    """The uncaught script errors of a page made by `new_page`."""
    return _PAGE_ERRORS.get(page, [])


async def state(page: Page, value: str, timeout_s: float = 15) -> None:
    await page.wait_for_function(
        "s => document.body.dataset.state === s", arg=value, timeout=timeout_s * 1000
    )


async def pairing_code(page: Page) -> str:
    await state(page, "pairing")
    locator = page.locator("[data-pairing-code]")
    await page.wait_for_function(
        "() => /^[A-Z2-9]{8}$/.test(document.querySelector('[data-pairing-code]').textContent)"
    )
    return (await locator.text_content() or "").strip()


async def showing(page: Page, document_url: str, timeout_s: float = 15) -> str:
    """Wait until the screen shows `document_url`; its eventId."""
    await page.wait_for_function(
        "u => document.body.dataset.documentUrl === u && document.body.dataset.display === 'shown'",
        arg=document_url,
        timeout=timeout_s * 1000,
    )
    return str(await page.evaluate("document.body.dataset.eventId"))


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


@pytest.fixture
async def http_site(  # an in-process edge, for what needs no browser and no worker
    make_settings: SettingsFactory, tmp_path: Path
) -> AsyncIterator[RunningEdge]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A-1.pdf").write_bytes(b"%PDF-1.4\n")
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        DOCUMENTS_DIR=str(tmp_path / "docs"),
        DOCUMENT_ORIGINS="https://files.example.com",
    )
    async with running_edge(settings) as running:
        yield running
