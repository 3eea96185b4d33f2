"""A fake order service (outside the system), served over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class OrderService:
    """Answers `GET /orders/{id}` like the real one; tests change its behaviour live.

    - ids starting with `missing-` → 404
    - `fail_next[id] = n` → the next n lookups of id answer 503
    - `down = True` → every lookup answers 503
    - `delay_s` → every lookup waits that long first
    - `document_path` → the documentPath answered (`{orderId}` is the order's id)
    """

    url: str = ""
    down: bool = False
    delay_s: float = 0.0
    document_path: str = "/docs/{orderId}.pdf"
    fail_next: dict[str, int] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    tokens: list[str | None] = field(default_factory=list)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    """time.monotonic() of each request, per order id."""
    raw_paths: list[str] = field(default_factory=list)
    """Each request's path as sent, percent-encoding and all."""

    async def handle(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        self.arrivals.setdefault(order_id, []).append(time.monotonic())
        self.raw_paths.append(request.raw_path)
        self.requests[order_id] += 1
        self.tokens.append(request.headers.get("Authorization"))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.down:
            return web.json_response({"error": "service unavailable"}, status=503)
        if self.fail_next.get(order_id, 0) > 0:
            self.fail_next[order_id] -= 1
            return web.json_response({"error": "service unavailable"}, status=503)
        if order_id.startswith("missing-"):
            return web.json_response({"error": "order not found"}, status=404)
        path = self.document_path.replace("{orderId}", order_id)
        return web.json_response({"orderId": order_id, "documentPath": path})

    @property
    def total(self) -> int:
        return sum(self.requests.values())
