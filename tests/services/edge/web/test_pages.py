"""The pages over HTTP (no browser): headers, versioned assets, the demo's rules, origins."""

from __future__ import annotations

import re

import aiohttp

from services.config.settings import Settings
from services.edge.web.pages import load_assets
from tests.conftest import SettingsFactory
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    RunningEdge,
    mint,
    refused,
    running_edge,
)
from tests.edge_helpers import connect as sio_connect

PAGES = ("/", "/screen", "/controller", "/operator", "/demo")
ASSET = re.compile(r'(?:src|href)="(/assets/[0-9a-f]{16}/[^"]+)"')


async def test_every_page_has_the_csp_nosniff_and_no_inline_script(http_site: RunningEdge) -> None:
    async with aiohttp.ClientSession() as http:
        for path in PAGES:
            async with http.get(http_site.url + path) as response:
                assert response.status == 200, path
                body = await response.text()
                csp = response.headers["Content-Security-Policy"]
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Cache-Control"] == "no-cache"
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            assert directives["default-src"] == "'self'"
            assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no eval
            assert directives["frame-src"] == "'self' https://files.example.com"
            assert directives["frame-ancestors"] == "'self'"
            assert directives["object-src"] == "'none'"
            # Every <script> has a src (no inline code), every handler attribute is absent.
            for script in re.findall(r"<script[^>]*>(.*?)</script>", body, re.DOTALL):
                assert script.strip() == "", path
            assert not re.search(r"\son[a-z]+=", body), path
            assert "style=" not in body, path
            assert ASSET.findall(body), path


async def test_assets_are_versioned_cached_for_good_and_revalidate(http_site: RunningEdge) -> None:
    build, assets = load_assets()
    async with aiohttp.ClientSession() as http:
        async with http.get(http_site.url + "/screen") as response:
            links = ASSET.findall(await response.text())
        assert all(link.startswith(f"/assets/{build}/") for link in links)
        url = http_site.url + links[0]
        async with http.get(url) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            etag = response.headers["ETag"]
            body = await response.read()
        assert body == assets[links[0].split("/", 3)[3]].body
        async with http.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        # An older build's URL (a page of an edge before an upgrade) gets today's file, uncached.
        old = url.replace(build, "0" * 16)
        async with http.get(old) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
        for missing in ("/assets/{b}/nope.js", "/assets/{b}/../pages.py", "/assets/{b}/"):
            async with http.get(http_site.url + missing.format(b=build)) as response:
                assert response.status == 404, missing
        async with http.get(http_site.url + "/sw.js") as response:
            text = await response.text()
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert f"/assets/{build}" in text


async def test_js_and_module_files_have_a_script_type(http_site: RunningEdge) -> None:
    build, assets = load_assets()
    async with aiohttp.ClientSession() as http:
        for name in ("screen.js", "vendor/pdfjs/pdf.worker.min.mjs", "style.css"):
            async with http.get(f"{http_site.url}/assets/{build}/{name}") as response:
                assert response.status == 200
                kind = "text/css" if name.endswith(".css") else "text/javascript"
                assert response.headers["Content-Type"].startswith(kind), name
                assert await response.read() == assets[name].body


async def test_the_demo_gives_this_machine_a_screen_and_a_controller(
    http_site: RunningEdge,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(http_site.url + "/api/demo", json={}) as response:
            assert response.status == 201
            demo = await response.json()
        async with http.post(http_site.url + "/api/demo", data="{}") as response:
            assert response.status == 415  # not JSON: a cross-site form cannot get tokens
        # A browser elsewhere on the network (through a proxy on this machine) gets none.
        headers = {"X-Forwarded-For": "203.0.113.9"}
        async with http.post(http_site.url + "/api/demo", json={}, headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["code"] == "FORBIDDEN"
    assert demo["screenId"] == "demo"
    assert demo["orders"] == ["A-1"]
    tokens = http_site.edge.tokens
    assert tokens.verify_access(demo["screen"]["accessToken"]).role == "screen"
    assert tokens.verify_access(demo["controller"]["accessToken"]).role == "controller"


async def test_production_has_no_demo(make_settings: SettingsFactory) -> None:
    settings: Settings = make_settings(
        APP_ENV="production",
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
    )
    async with running_edge(settings) as running, aiohttp.ClientSession() as http:
        async with http.get(running.url + "/") as response:
            page = await response.text()
        assert "data-start-demo" not in page
        assert "/demo" not in page
        async with http.get(running.url + "/demo") as response:
            assert response.status == 404
        async with http.post(running.url + "/api/demo", json={}) as response:
            assert response.status in (404, 405)


async def test_the_edges_own_pages_may_connect_and_other_origins_may_not(
    http_site: RunningEdge,
) -> None:
    token = mint("u1", "s1", "screen")
    own = (
        http_site.url
    )  # the Origin a page served by this edge sends: the address it was loaded from
    client = await sio_connect(http_site.url, token, headers={"Origin": own})
    await client.sio.disconnect()
    assert await refused(http_site.url, token, headers={"Origin": "http://evil.example"}) == (
        "ORIGIN_NOT_ALLOWED"
    )
    assert await refused(http_site.url, token, headers={"Origin": "null"}) == "ORIGIN_NOT_ALLOWED"
