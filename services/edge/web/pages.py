"""The pages (`/`, `/screen`, `/controller`, `/operator`, `/demo`) and their assets (SPEC 10).

Assets (`static/`: our JS and CSS, and `static/vendor/`: the npm libraries) are read once at
start and served at `/assets/{build}/...`, where `build` is a hash of all of them: a URL names
one content for ever (`immutable`, a year), and a new release is a new URL. A request for
another build (a page of an older edge during a rolling upgrade) gets the current file,
uncached. Pages are small templates with `{{assets}}` for that prefix and are revalidated on
every load. Every page carries the Content-Security-Policy: only the edge itself, and the
document origins of DOCUMENT_ORIGINS for what a screen shows; no inline script or style.

The devices' service worker (`/sw.js`) is served from the root so its scope covers `/screen`
and `/controller`; it caches those pages, their assets and the screen's last documents for a
reload while the edge is unreachable.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.config.settings import Settings
from services.edge.documents import content_type

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
PAGES_DIR = WEB_DIR / "pages"
IMMUTABLE = "public, max-age=31536000, immutable"
PAGES = ("start", "screen", "controller", "operator", "demo")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _media_type(path: Path) -> str:
    if path.suffix in (".js", ".mjs"):
        return "text/javascript; charset=utf-8"
    if path.suffix == ".css":
        return "text/css; charset=utf-8"
    if path.suffix == ".pfb":
        return "application/octet-stream"
    return content_type(path)


def load_assets(root: Path = STATIC_DIR) -> tuple[str, dict[str, Asset]]:
    """Every file under `root` by its relative path, and the build id that names them all."""
    assets: dict[str, Asset] = {}
    build = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        build.update(f"{relative}\0{digest}\0".encode())
        assets[relative] = Asset(body, _media_type(path), f'"{digest[:32]}"')
    return build.hexdigest()[:16], assets


def content_security_policy(document_origins: tuple[str, ...]) -> str:
    documents = " ".join(("'self'", *document_origins))
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {documents} data: blob:",
            f"frame-src {documents}",
            f"connect-src {documents}",
            f"media-src {documents}",
            "font-src 'self' data:",
            "worker-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        )
    )


class WebPages:
    def __init__(self, settings: Settings, *, edge_id: str) -> None:
        self._settings = settings
        self.build, self._assets = load_assets()
        self.prefix = f"/assets/{self.build}"
        self._headers = {
            "Content-Security-Policy": content_security_policy(settings.document_origins),
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        }
        development = settings.app_env == "development"
        values = {
            "assets": self.prefix,
            "environment": settings.app_env,
            "edge": edge_id,
            "demo": "true" if development else "false",
        }
        self._pages = {
            name: _render((PAGES_DIR / f"{name}.html").read_text(), values, demo=development)
            for name in PAGES
            if development or name != "demo"
        }
        self._worker = _render((PAGES_DIR / "sw.js").read_text(), values)

    def routes(self) -> list[Route]:
        routes = [
            Route(path, self._page(name), methods=["GET", "HEAD"])
            for path, name in (
                ("/", "start"),
                ("/screen", "screen"),
                ("/controller", "controller"),
                ("/operator", "operator"),
                ("/demo", "demo"),
            )
            if name in self._pages
        ]
        routes.append(Route("/sw.js", self.service_worker, methods=["GET", "HEAD"]))
        routes.append(Route("/assets/{build}/{path:path}", self.asset, methods=["GET", "HEAD"]))
        return routes

    def _page(self, name: str) -> Callable[[Request], Response]:
        body = self._pages[name]

        def page(_request: Request) -> Response:
            return Response(body, media_type="text/html; charset=utf-8", headers=self._headers)

        return page

    def service_worker(self, _request: Request) -> Response:
        return Response(
            self._worker,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    def asset(self, request: Request) -> Response:
        asset = self._assets.get(request.path_params["path"])
        if asset is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        current = request.path_params["build"] == self.build
        headers = {
            "Cache-Control": IMMUTABLE if current else "no-store",
            "ETag": asset.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if current and request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)


def _render(template: str, values: dict[str, str], *, demo: bool = False) -> str:
    """`{{name}}` replaced by its value; `<!--demo-->…<!--/demo-->` kept only in development."""
    if not demo:
        template = re.sub(r"<!--demo-->.*?<!--/demo-->", "", template, flags=re.DOTALL)
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", html.escape(value))
    return template
