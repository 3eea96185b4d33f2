"""The pages when things go wrong: the edge stopped, killed and back; tokens that run out."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import aiohttp
from playwright.async_api import Browser, BrowserContext, Page

from services.edge.tokens import TokenPair
from tests.edge_helpers import mint
from tests.services.edge.web.conftest import (
    Site,
    new_page,
    page_errors,
    pairing_code,
    screenshot,
    showing,
    state,
)
from tests.services.edge.web.test_pages_flow import paired, scan

# Records every state the page passes through, and every document layer it builds.
WATCH = """() => {
  window.__states = [document.body.dataset.state];
  new MutationObserver(() => window.__states.push(document.body.dataset.state))
    .observe(document.body, {attributes: true, attributeFilter: ['data-state']});
  window.__layers = 0;
  new MutationObserver((records) => {
    for (const r of records)
      for (const n of r.addedNodes) if (n.classList?.contains('layer')) window.__layers++;
  }).observe(document.querySelector('[data-stage]'), {childList: true});
}"""


def fragment(pair: TokenPair) -> str:
    return urlencode({"access": pair.access_token, "refresh": pair.refresh_token})


async def stored_tokens(page: Page, kind: str) -> dict[str, str]:
    value = await page.evaluate("k => JSON.parse(localStorage.getItem(k))", f"rd.{kind}.tokens")
    assert isinstance(value, dict)
    return value


async def test_a_stopped_edge_leaves_the_document_on_screen_also_after_a_reload(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "kiosk-1")
    controller = await paired(site, contexts, browser, "/controller", "kiosk-1")
    await scan(controller, "ORDER-1003")
    event_id = await showing(screen, "/documents/ORDER-1003.pdf")
    await screen.wait_for_function("() => navigator.serviceWorker.controller !== null")

    await site.stop()
    await state(screen, "offline")
    assert await screen.evaluate("document.body.dataset.documentUrl") == (
        "/documents/ORDER-1003.pdf"
    )
    assert await screen.locator(".layer:not(.preparing) canvas").count() == 1
    assert await screen.is_visible(".status")  # the state shows, discreetly

    await screen.reload()
    assert await showing(screen, "/documents/ORDER-1003.pdf") == event_id
    await state(screen, "offline")
    assert await screen.locator(".layer:not(.preparing) canvas").count() == 1
    await screenshot(screen, "screen-offline-after-reload")
    assert page_errors(screen) == []


async def test_after_an_edge_kill_the_screen_shows_the_newest_and_an_offline_scan_goes_once(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "kiosk-2")
    controller = await paired(site, contexts, browser, "/controller", "kiosk-2")
    await scan(controller, "ORDER-1001")
    await showing(screen, "/documents/ORDER-1001.pdf")
    await controller.wait_for_function("() => navigator.serviceWorker.controller !== null")

    await site.kill()
    await state(controller, "offline")
    await controller.locator("[data-scan-input]").press_sequentially("ORDER-1002\n")
    row = controller.locator("[data-result]").first
    await row.wait_for()
    assert await row.get_attribute("data-code") == "PENDING"
    trigger_id = await row.get_attribute("data-trigger-id")
    assert trigger_id
    queued = await controller.evaluate("JSON.parse(localStorage.getItem('rd.controller.queue'))")
    assert [q["id"] for q in queued] == [trigger_id]
    await controller.reload()  # kept across a reload too
    await asyncio.sleep(1.0)

    await site.start()
    await state(controller, "connected", timeout_s=20)
    await controller.wait_for_function(
        "id => document.querySelector(`[data-trigger-id='${id}']`).dataset.code === 'OK'",
        arg=trigger_id,
        timeout=20_000,
    )
    await showing(screen, "/documents/ORDER-1002.pdf", timeout_s=20)
    await asyncio.sleep(6.0)  # the controller's retry loop runs meanwhile
    assert await site.triggers_with_id(trigger_id) == 1
    assert await controller.evaluate("localStorage.getItem('rd.controller.queue')") == "[]"


async def test_the_same_event_id_again_does_not_reload_the_document(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "kiosk-3")
    controller = await paired(site, contexts, browser, "/controller", "kiosk-3")
    await scan(controller, "ORDER-1001")
    event_id = await showing(screen, "/documents/ORDER-1001.pdf")
    await screen.evaluate(WATCH)
    fetched: list[str] = []
    screen.on("request", lambda r: fetched.append(r.url) if "/documents/" in r.url else None)

    # Without lastEventId the edge sends the screen its current display again on connect.
    await screen.evaluate("localStorage.removeItem('rd.screen.lastEventId')")
    await site.restart()
    await state(screen, "connected", timeout_s=20)
    acks = await site.acks_for(event_id)
    for _ in range(100):
        if len(acks) >= 2:
            break
        await asyncio.sleep(0.1)
        acks = await site.acks_for(event_id)
    assert [a["status"] for a in acks] == ["shown", "shown"]
    assert await screen.evaluate("window.__layers") == 0, "the document was rendered again"
    assert fetched == []
    assert await screen.evaluate("document.body.dataset.eventId") == event_id


async def test_an_access_token_that_expires_is_renewed_without_an_interruption(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    # 70 s: inside the edge's 60 s warning window soon after connecting, so the page renews
    # during the test (`auth:expiring`, /api/auth/refresh, then `auth:refresh`).
    pair = await site.issue("screen", "kiosk-4", ttl=70)
    screen = await new_page(contexts, browser)
    await screen.goto(f"{site.url}/screen#{fragment(pair)}")
    assert "#" not in screen.url  # the tokens left the address bar at once
    await state(screen, "connected")
    controller_pair = await site.issue("controller", "kiosk-4")
    controller = await new_page(contexts, browser)
    await controller.goto(f"{site.url}/controller#{fragment(controller_pair)}")
    await state(controller, "connected")
    await scan(controller, "ORDER-1001")
    await showing(screen, "/documents/ORDER-1001.pdf")
    await screen.evaluate(WATCH)

    await screen.wait_for_function(
        "old => JSON.parse(localStorage.getItem('rd.screen.tokens')).accessToken !== old",
        arg=pair.access_token,
        timeout=30_000,
    )
    renewed = await stored_tokens(screen, "screen")
    assert renewed["refreshToken"] != pair.refresh_token
    await asyncio.sleep(1.0)
    assert await screen.evaluate("window.__states") == ["connected"]
    assert await screen.evaluate("window.__layers") == 0
    # The live connection carries the new token: a scan still reaches the screen.
    await scan(controller, "ORDER-1002")
    await showing(screen, "/documents/ORDER-1002.pdf")


async def test_a_revoked_refresh_family_sends_the_page_back_to_pairing_with_a_message(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    pair = await site.issue("screen", "kiosk-5", ttl=70)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{site.url}/api/auth/refresh",
            json={"refreshToken": pair.refresh_token, "screenId": "kiosk-5"},
        ) as response,
    ):
        assert response.status == 200  # rotated: the page's copy is now a used token
    screen = await new_page(contexts, browser)
    await screen.goto(f"{site.url}/screen#{fragment(pair)}")
    code = await pairing_code(screen)
    message = await screen.text_content("[data-message]")
    assert message is not None
    assert "signed out" in message
    assert await screen.evaluate("localStorage.getItem('rd.screen.tokens')") is None
    # And it pairs again from there.
    status, _ = await site.approve(code, "kiosk-5")
    assert status == 200
    await state(screen, "connected")


async def test_a_pairing_that_expires_gets_a_new_code_and_bad_approvals_are_refused(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await new_page(contexts, browser)
    await screen.goto(f"{site.url}/screen")
    first = await pairing_code(screen)
    await screenshot(screen, "screen-pairing")

    assert (await site.approve("ZZZZZZZZ", "kiosk-6"))[0] == 404  # a wrong code
    not_an_admin = mint("c1", "kiosk-6", "controller")
    assert (await site.approve(first, "kiosk-6", not_an_admin))[0] == 403

    # The pairing runs out (its keys expire in the store): the page asks for a new code.
    async for key in site.redis.scan_iter(match=f"{site.keyspace.prefix}:pair*"):
        await site.redis.delete(key)
    await screen.wait_for_function(
        "c => document.querySelector('[data-pairing-code]').textContent.trim() !== c",
        arg=first,
        timeout=15_000,
    )
    second = await pairing_code(screen)
    assert second != first
    assert (await site.approve(first, "kiosk-6"))[0] == 404  # the old code is gone
    assert (await site.approve(second, "kiosk-6"))[0] == 200
    await state(screen, "connected")
    assert (await site.approve(second, "kiosk-6"))[0] == 404  # single use
