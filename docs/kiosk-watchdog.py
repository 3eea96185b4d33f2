"""Restart a kiosk's browser when its /screen page stops answering (docs/kiosk.md).

A crashed renderer ("Aw, Snap!") leaves the browser process running and the screen dead;
systemd's Restart= never notices. This asks the page itself, through Chromium's DevTools
endpoint on loopback (`--remote-debugging-port=9222`), for its `document.body.dataset.state`
every INTERVAL seconds; after FAILURES checks in a row without an answer (no /screen page, a
renderer that does not evaluate, a debugger that does not answer) it restarts the browser's
unit. A screen that is merely `offline` (the edge unreachable) answers and is left alone: it
keeps its document and reconnects by itself.

    python3 kiosk-watchdog.py --unit rdisplay-kiosk.service

Needs Python 3.11 and the `websockets` package (Debian: python3-websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request

import websockets

INTERVAL_S = 15
FAILURES = 3
ANSWER_TIMEOUT_S = 5


def _targets(debugger: str, timeout_s: float) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"{debugger}/json/list", timeout=timeout_s) as response:
        targets = json.load(response)
    return targets if isinstance(targets, list) else []


async def page_state(debugger: str, timeout_s: float = ANSWER_TIMEOUT_S) -> str | None:
    """The /screen page's state (`connected`, `offline`, ...), or None when it does not answer."""
    try:
        targets = await asyncio.to_thread(_targets, debugger, timeout_s)
    except (OSError, ValueError):
        return None
    pages = [
        t
        for t in targets
        if t.get("type") == "page"
        and "/screen" in t.get("url", "")
        and t.get("webSocketDebuggerUrl")
    ]
    if not pages:
        return None
    request = {
        "id": 1,
        "method": "Runtime.evaluate",
        "params": {"expression": "document.body.dataset.state", "returnByValue": True},
    }
    try:
        async with asyncio.timeout(timeout_s):
            async with websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
                await ws.send(json.dumps(request))
                while True:
                    answer = json.loads(await ws.recv())
                    if answer.get("id") == 1:
                        value = answer.get("result", {}).get("result", {}).get("value")
                        return value if isinstance(value, str) else None
    except (OSError, TimeoutError, websockets.WebSocketException, ValueError):
        return None


async def watch(debugger: str, unit: str) -> None:
    missed = 0
    while True:
        state = await page_state(debugger)
        missed = 0 if state is not None else missed + 1
        if missed >= FAILURES:
            sys.stderr.write(
                f"kiosk watchdog: /screen did not answer {missed} times; restarting {unit}\n"
            )
            restart = ["systemctl", "--user", "restart", unit]
            await asyncio.to_thread(subprocess.run, restart, check=False)
            missed = 0
            await asyncio.sleep(INTERVAL_S * 2)  # the browser's start
        await asyncio.sleep(INTERVAL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debugger", default="http://127.0.0.1:9222")
    parser.add_argument("--unit", default="rdisplay-kiosk.service")
    parser.add_argument("--once", action="store_true", help="print the page's state and exit")
    args = parser.parse_args()
    if args.once:
        state = asyncio.run(page_state(args.debugger))
        print(state or "no answer")
        sys.exit(0 if state else 1)
    asyncio.run(watch(args.debugger, args.unit))


if __name__ == "__main__":
    main()
