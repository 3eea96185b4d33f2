"""The pages in Chromium against a real serve: pairing, a scan, what the screen shows and acks."""

from __future__ import annotations

import asyncio
import time
from typing import Literal
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Route

from tests.services.edge.web.conftest import (
    Site,
    new_page,
    page_errors,
    pairing_code,
    screenshot,
    showing,
    state,
)

# Sum of a canvas's pixels that are not white: pdf.js drew something on it.
INKED = """() => {
  const canvas = document.querySelector('.layer:not(.preparing) canvas');
  if (!canvas) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] < 200) ink++;
  return ink;
}"""


async def paired(
    site: Site,
    contexts: list[BrowserContext],
    browser: Browser,
    path: str,
    screen: str,
    *,
    service_workers: Literal["allow", "block"] = "allow",
) -> Page:
    page = await new_page(contexts, browser, service_workers=service_workers)
    await page.goto(site.url + path)
    code = await pairing_code(page)
    status, body = await site.approve(code, screen)
    assert status == 200, body
    await state(page, "connected")
    return page


async def scan(controller: Page, order_id: str) -> dict[str, str]:
    """Type a scan as a keyboard-wedge scanner does; the final result row's data."""
    before = await controller.locator("[data-result]").count()
    await controller.locator("[data-scan-input]").press_sequentially(order_id + "\n", delay=5)
    await controller.wait_for_function(
        """n => document.querySelectorAll('[data-result]').length > n &&
               document.querySelector('[data-result]').dataset.code !== 'PENDING'""",
        arg=before,
        timeout=15_000,
    )
    row = controller.locator("[data-result]").first
    return {
        name: await row.get_attribute(f"data-{name}") or ""
        for name in ("trigger-id", "order-id", "code", "latency-ms")
    }


async def test_paired_screen_shows_the_scanned_pdf_and_the_stream_has_its_ack(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "line-1")
    controller = await paired(site, contexts, browser, "/controller", "line-1")
    assert await controller.text_content("[data-target-screen]") == "line-1"

    result = await scan(controller, "ORDER-1001")
    assert result["code"] == "OK"
    assert result["order-id"] == "ORDER-1001"
    assert int(result["latency-ms"]) > 0

    event_id = await showing(screen, "/documents/ORDER-1001.pdf")
    assert await screen.evaluate(INKED) > 1000, "pdf.js drew nothing"
    acks = await site.acks_for(event_id)
    assert acks[0]["status"] == "shown"
    assert acks[0]["triggerId"] == result["trigger-id"]
    assert acks[0]["screenId"] == "line-1"

    await screenshot(screen, "screen-showing-a-document")
    await screenshot(controller, "controller")
    assert page_errors(screen) == []
    assert page_errors(controller) == []


async def test_a_missing_document_acks_failed_with_the_reason_and_says_so(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "line-2")
    controller = await paired(site, contexts, browser, "/controller", "line-2")

    assert (await scan(controller, "NO-SUCH-ORDER"))["code"] == "OK"  # the URL resolved
    await screen.wait_for_function("() => document.body.dataset.display === 'failed'")
    event_id = await screen.evaluate("document.body.dataset.eventId")
    assert await screen.evaluate("document.body.dataset.documentUrl") == ""
    reason = await screen.text_content("[data-failure-reason]")
    assert reason is not None
    assert "404" in reason
    assert await screen.is_visible("[data-failure]")
    acks = await site.acks_for(event_id)
    assert acks[0]["status"] == "failed"
    assert "404" in acks[0]["error"]

    # A PDF that is not one: pdf.js's own reason, not a `shown` because the bytes arrived.
    await scan(controller, "X-CORRUPT-1")
    await screen.wait_for_function(
        "e => document.body.dataset.display === 'failed' && document.body.dataset.eventId !== e",
        arg=event_id,
    )
    corrupt = await screen.evaluate("document.body.dataset.eventId")
    acks = await site.acks_for(corrupt)
    assert acks[0]["status"] == "failed"
    assert acks[0]["error"], acks[0]


async def test_an_image_acks_on_load_and_a_missing_one_on_error(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    await site.restart(DOCUMENT_URL_TEMPLATE="/documents/{orderId}")
    screen = await paired(site, contexts, browser, "/screen", "line-4")
    controller = await paired(site, contexts, browser, "/controller", "line-4")

    await scan(controller, "X-PHOTO-1.png")
    event_id = await showing(screen, "/documents/X-PHOTO-1.png")
    assert await screen.locator(".layer img").count() == 1
    assert (await site.acks_for(event_id))[0]["status"] == "shown"

    await scan(controller, "GONE-1.png")
    await screen.wait_for_function("() => document.body.dataset.display === 'failed'")
    failed = await screen.evaluate("document.body.dataset.eventId")
    ack = (await site.acks_for(failed))[0]
    assert ack["status"] == "failed"
    assert "404" in ack["error"]


async def test_a_pdf_acks_shown_only_after_pdfjs_rendered_it(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    screen = await paired(site, contexts, browser, "/screen", "line-3", service_workers="block")
    controller = await paired(site, contexts, browser, "/controller", "line-3")
    delivered: list[float] = []

    async def slow(route: Route) -> None:
        await asyncio.sleep(1.5)  # the document takes its time, as over a shop's Wi-Fi
        response = await route.fetch()
        delivered.append(time.time())
        await route.fulfill(response=response)

    await screen.route("**/documents/ORDER-1002.pdf", slow)
    started = time.time()
    assert (await scan(controller, "ORDER-1002"))["code"] == "OK"
    await asyncio.sleep(1.0)
    assert await site.display_acks() == [], "acked before the document arrived"
    event_id = await showing(screen, "/documents/ORDER-1002.pdf")
    assert await screen.evaluate(INKED) > 1000
    acks = await site.acks_for(event_id)
    assert acks[0]["status"] == "shown"
    assert delivered
    assert acks[0]["ackedAt"] / 1000 >= delivered[0] - 0.05
    assert delivered[0] - started >= 1.5
    await screen.unroute_all(behavior="ignoreErrors")


async def test_the_one_click_demo_shows_a_document_and_asks_only_the_edge(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    hosts: set[str] = set()
    page = await new_page(contexts, browser, 1440, 860)
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    await page.goto(site.url + "/")
    await state(page, "connected")  # the start page read /health
    await screenshot(page, "start-page")
    await page.click("[data-start-demo]")
    assert page.url == site.url + "/demo"
    screen = page.frame_locator("[data-demo-screen]")
    await screen.locator(".layer:not(.preparing) canvas").wait_for(timeout=15_000)
    controller = page.frame_locator("[data-demo-controller]")
    first = controller.locator("[data-result]").first
    await first.and_(controller.locator("[data-code=OK]")).wait_for(timeout=15_000)
    assert await first.get_attribute("data-order-id") == "DEMO-1"
    await page.wait_for_timeout(300)  # the canvas is swapped in; let it paint
    await screenshot(page, "demo")
    for path in ("/screen", "/controller", "/operator"):
        await page.goto(site.url + path)
        await page.wait_for_load_state("networkidle")
    assert hosts == {f"127.0.0.1:{site.port}"}
    assert page_errors(page) == []


async def test_an_operator_approves_a_screens_code_from_the_admin_form(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    admin = await site.issue("admin", "ops")
    operator = await new_page(contexts, browser)
    await operator.goto(
        f"{site.url}/operator#access={admin.access_token}&refresh={admin.refresh_token}"
    )
    await state(operator, "connected")
    screen = await new_page(contexts, browser)
    await screen.goto(site.url + "/screen")
    code = await pairing_code(screen)

    # The page lists the device as waiting, with the role it asked for and only the code's
    # first characters (the rest is read off the device: anyone may ask for a pairing).
    waiting = operator.locator(f'[data-waiting-code="{code[:3]}"]')
    await waiting.wait_for(timeout=10_000)
    listed = await waiting.text_content() or ""
    assert "screen" in listed
    assert code not in listed
    await waiting.locator("button[data-action=use-code]").click()
    assert await operator.input_value("input[name=code]") == code[:3]
    await operator.fill("input[name=code]", code.lower())  # typed as read off the screen
    await operator.fill("input[name=screenId]", "hall-2")
    await operator.click("button[type=submit]")
    await operator.wait_for_function(
        "() => document.querySelector('[data-message]').dataset.tone === 'ok'"
    )
    await state(screen, "connected")
    assert await screen.text_content("[data-screen-name]") == "hall-2"
    await screenshot(operator, "operator-approval")

    # The same code again: refused, and the page says why.
    await operator.fill("input[name=code]", code)
    await operator.fill("input[name=screenId]", "hall-2")
    await operator.click("button[type=submit]")
    await operator.wait_for_function(
        "() => document.querySelector('[data-message]').dataset.tone === 'error'"
    )
    assert page_errors(operator) == []
