"""Every HTTP response of the edge says nosniff, whichever route (or none) answered."""

from __future__ import annotations

import aiohttp

from tests.conftest import SettingsFactory
from tests.edge_helpers import running_edge


async def test_every_http_response_says_nosniff(make_settings: SettingsFactory) -> None:
    async with running_edge(make_settings()) as edge, aiohttp.ClientSession() as http:
        for method, path, expected in (
            ("GET", "/health", 200),
            ("GET", "/metrics", 200),
            ("GET", "/no-such-page", 404),
            ("GET", "/api/auth/refresh", 405),
            ("GET", "/socket.io/?EIO=4&transport=polling", 200),  # engine.io's own answer
            ("GET", "/socket.io/?EIO=3&transport=polling", 400),
        ):
            async with http.request(method, f"{edge.url}{path}") as response:
                assert response.status == expected, path
                assert response.headers.get("X-Content-Type-Options") == "nosniff", path
