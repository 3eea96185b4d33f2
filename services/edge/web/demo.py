"""`POST /api/demo` (development only): a screen and a controller paired, for the start page.

The demo gives a browser on the edge's own machine a screen's and a controller's tokens for
the screen `demo`, with nothing to copy (SPEC 10: "production shows no such shortcut" — the
route does not exist unless APP_ENV is development). Only loopback clients get them: a
development edge bound to a shop's network must not hand tokens to whoever asks. The body
must be JSON, so a cross-site form cannot post it without a preflight that fails.
"""

from __future__ import annotations

import ipaddress
import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.config.settings import Settings
from services.edge.tokens import TokenPair, TokenService, TokenStoreError

logger = logging.getLogger(__name__)

DEMO_SCREEN = "demo"
DEMO_USER = "demo"
MAX_ORDERS = 6


class Demo(msgspec.Struct, frozen=True, rename="camel"):
    screen_id: str
    screen: TokenPair
    controller: TokenPair
    orders: list[str]


def make_demo_route(settings: Settings, tokens: TokenService) -> Route:
    orders = demo_orders(settings)

    async def demo(request: Request) -> Response:
        if not _loopback(request):
            return _error(403, "FORBIDDEN", "the demo is offered to this machine's browser only")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "VALIDATION_ERROR", "send an application/json body")
        try:
            screen = await tokens.issue_pair(DEMO_USER, DEMO_SCREEN, "screen")
            controller = await tokens.issue_pair(DEMO_USER, DEMO_SCREEN, "controller")
        except TokenStoreError as exc:
            logger.warning("demo tokens not issued", extra={"error": str(exc)})
            return _error(503, "INTERNAL_ERROR", "the store is unavailable; try again")
        body = Demo(DEMO_SCREEN, screen, controller, orders)
        return Response(
            msgspec.json.encode(body),
            status_code=201,
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return Route("/api/demo", demo, methods=["POST"])


def demo_orders(settings: Settings) -> list[str]:
    """Order ids whose document DOCUMENTS_DIR holds under the default URL template."""
    root = settings.documents_dir
    if root is None or not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        url = settings.document_url_template.replace("{orderId}", path.stem)
        if url == f"/documents/{path.name}":
            found.append(path.stem)
    return found[:MAX_ORDERS]


def _loopback(request: Request) -> bool:
    if request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        msgspec.json.encode({"error": message, "code": code}),
        status_code=status,
        media_type="application/json",
    )
