"""docs/kiosk-watchdog.py reads a real kiosk page's state, and notices a crashed renderer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType

import pytest
from playwright.async_api import Browser, async_playwright

from tests.helpers import free_port, load_file_module
from tests.services.edge.web.conftest import ROOT, Site, chromium_path, state


def load_watchdog() -> ModuleType:
    return load_file_module(ROOT / "docs" / "kiosk-watchdog.py")


@pytest.fixture
async def debuggable() -> AsyncIterator[tuple[Browser, str]]:
    """A chromium with the DevTools port on loopback, as docs/kiosk.md starts it."""
    port = free_port()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            args=[f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1"],
        )
        try:
            yield browser, f"http://127.0.0.1:{port}"
        finally:
            await browser.close()


async def test_the_watchdog_reads_the_state_and_sees_a_crashed_renderer(
    site: Site, debuggable: tuple[Browser, str]
) -> None:
    watchdog = load_watchdog()
    browser, debugger = debuggable
    page = await browser.new_page()
    assert await watchdog.page_state(debugger) is None  # no /screen page yet
    await page.goto(site.url + "/screen")
    await state(page, "pairing")
    assert await watchdog.page_state(debugger) == "pairing"

    cdp = await page.context.new_cdp_session(page)
    async with page.expect_event("crash", timeout=15_000):
        # Page.crash never answers: its renderer is gone before it could.
        crash = asyncio.ensure_future(cdp.send("Page.crash"))
    crash.cancel()
    assert await watchdog.page_state(debugger, timeout_s=3) is None
