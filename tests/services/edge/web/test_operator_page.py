"""/operator in Chromium against a real serve (issue 16): screens going offline, a dead letter
redriven from the page, a non-admin refused, and a screenshot of the whole page."""

from __future__ import annotations

from playwright.async_api import Browser, BrowserContext, Page

from benchmarks.order_fake import OrderService
from tests.edge_helpers import connect, mint, trigger_payload
from tests.helpers import fast_failures, read_stream
from tests.services.edge.web.conftest import (
    ARTIFACTS,
    Site,
    new_page,
    page_errors,
    pairing_code,
    showing,
    state,
)


async def _open(
    site: Site, contexts: list[BrowserContext], browser: Browser, path: str, role: str, screen: str
) -> Page:
    pair = await site.issue(role, screen)
    page = await new_page(contexts, browser, 1440, 900)
    await page.goto(f"{site.url}{path}#access={pair.access_token}&refresh={pair.refresh_token}")
    return page


async def _row(page: Page, screen: str, online: str, timeout_s: float = 20) -> None:
    await page.wait_for_function(
        """([s, o]) => {
            const row = document.querySelector(`[data-screen-id="${s}"]`);
            return row !== null && row.dataset.online === o;
        }""",
        arg=[screen, online],
        timeout=timeout_s * 1000,
    )


async def test_the_operator_sees_screens_and_redrives_a_dead_letter(
    site: Site, browser: Browser, contexts: list[BrowserContext], order_service: OrderService
) -> None:
    order_service.document_path = "/documents/{orderId}.pdf"  # the sample PDFs the edge serves
    await site.restart(**fast_failures(order_service.url))
    operator = await _open(site, contexts, browser, "/operator", "admin", "ops")
    await state(operator, "connected")
    await operator.locator("[data-dashboard]").wait_for(state="visible")

    line_1 = await _open(site, contexts, browser, "/screen", "screen", "line-1")
    line_2 = await _open(site, contexts, browser, "/screen", "screen", "line-2")
    for page in (line_1, line_2):
        await state(page, "connected")
    await _row(operator, "line-1", "true")
    await _row(operator, "line-2", "true")

    controller = await connect(site.url, mint("scanner-1", "line-1"))
    try:
        ack = await controller.emit("trigger", trigger_payload("ORDER-1001"))
        assert ack["success"] is True, ack
        event_id = ack["data"]["eventId"]
        await showing(line_1, "/documents/ORDER-1001.pdf")
        await operator.wait_for_function(
            """e => {
                const row = document.querySelector('[data-screen-id="line-1"]');
                return row.dataset.eventId === e && row.textContent.includes('shown');
            }""",
            arg=event_id,
            timeout=15_000,
        )

        # line-2's browser goes away: its row goes offline (a clean close is at once; an edge
        # that dies takes its screens offline within 15 s, tests/services/runtime).
        await line_2.context.close()
        contexts.remove(line_2.context)
        await _row(operator, "line-2", "false")
        await _row(operator, "line-1", "true", timeout_s=1)

        # The order service fails: the trigger is dead-lettered and shows on the page.
        order_service.fail_next["ORDER-1002"] = 1000
        payload = trigger_payload("ORDER-1002")
        first = await controller.emit("trigger", payload)
        assert first["code"] == "DEAD_LETTERED", first
        [dead] = await read_stream(site.redis, site.keyspace.dead_letter)
        row = operator.locator(f'[data-dead-letter-id="{dead.id}"]')
        await row.wait_for(timeout=10_000)
        assert "ORDER-1002" in (await row.text_content() or "")
        await operator.wait_for_function(
            "() => document.querySelector('[data-tile=\"dead\"] .value').textContent === '1'"
        )
        # A device asks to be paired: listed with its role and only the code's start.
        newcomer = await new_page(contexts, browser)
        await newcomer.goto(site.url + "/screen")
        code = await pairing_code(newcomer)
        waiting = operator.locator(f'[data-waiting-code="{code[:3]}"]')
        await waiting.wait_for(timeout=10_000)
        assert code not in (await waiting.text_content() or "")
        await operator.wait_for_timeout(2500)  # the chart gets its points (one per second)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await operator.screenshot(path=str(ARTIFACTS / "operator.png"), full_page=True)

        # Show it, then redrive it from the page once the order service is back.
        await row.locator("button[data-action=show]").click()
        dialog = operator.locator("[data-entry-dialog]")
        await dialog.wait_for(state="visible")
        assert "ORDER-1002" in (await dialog.locator("[data-entry-body]").text_content() or "")
        await dialog.locator("button[data-action=close-dialog]").click()
        await dialog.wait_for(state="hidden")
        order_service.fail_next["ORDER-1002"] = 0
        await row.locator("button[data-action=redrive]").click()
        await row.wait_for(state="detached", timeout=10_000)
        [result] = await controller.wait_for("trigger:result", timeout=15)
        assert result["id"] == payload["id"]
        assert result["success"] is True
        await showing(line_1, "/documents/ORDER-1002.pdf")
        # The next pushed update agrees: the dead letter is empty.
        await operator.wait_for_function(
            "() => document.querySelector('[data-tile=\"dead\"] .value').textContent === '0'",
            timeout=10_000,
        )
        assert await operator.locator("[data-dead-letter-id]").count() == 0
    finally:
        await controller.sio.disconnect()
    events = await read_stream(site.redis, site.keyspace.events)
    mine = [e.type for e in events if e.data.get("triggerId") == payload["id"]]
    outcomes = [t for t in mine if t.startswith("trigger.")]
    assert outcomes == ["trigger.dead_lettered", "trigger.projected"]  # projected once
    assert page_errors(operator) == []


async def test_a_non_admin_token_gets_no_operator_view(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = await _open(site, contexts, browser, "/operator", "controller", "line-1")
    await state(page, "pairing")
    message = page.locator("[data-message]")
    await message.wait_for(state="visible")
    assert "admin" in (await message.text_content() or "")
    assert await page.locator("[data-dashboard]").is_hidden()
    assert await page.locator("[data-screen-id]").count() == 0
    assert page_errors(page) == []


async def test_the_page_takes_a_fresh_snapshot_after_the_edge_restarts(
    site: Site, browser: Browser, contexts: list[BrowserContext]
) -> None:
    operator = await _open(site, contexts, browser, "/operator", "admin", "ops")
    await state(operator, "connected")
    await operator.locator("[data-dashboard]").wait_for(state="visible")
    assert await operator.locator("[data-screen-id]").count() == 0

    await site.kill()  # no goodbye: the page sees the connection drop
    await state(operator, "offline")
    await site.start()
    await state(operator, "connected", timeout_s=30)
    # The new edge knows nothing of the page: only a page that subscribed again on its new
    # connection is in the room the updates go to, so the screen that connects now shows up.
    screen = await _open(site, contexts, browser, "/screen", "screen", "after-restart")
    await state(screen, "connected")
    await _row(operator, "after-restart", "true")
    assert page_errors(operator) == []
