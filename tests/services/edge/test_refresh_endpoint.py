"""POST /api/auth/refresh over real HTTP: uvicorn on a free port, aiohttp as the client."""

from __future__ import annotations

import asyncio
import contextlib
import secrets as random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import uvicorn
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette

from services.config.jwt_keys import JwtSecrets
from services.edge.tokens import MAX_BODY_BYTES, TokenService, make_refresh_route
from streams.keys import Keyspace
from tests.helpers import free_port


class Served:
    def __init__(self, url: str, tokens: TokenService, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.tokens = tokens
        self.http = http

    async def post(self, body: bytes | str, **headers: str) -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        url = f"{self.url}/api/auth/refresh"
        async with self.http.post(url, data=data, headers=headers) as response:
            return response.status, await response.json()

    async def refresh(self, refresh_token: str, screen_id: str = "screen-1") -> tuple[int, Any]:
        async with self.http.post(
            f"{self.url}/api/auth/refresh",
            json={"refreshToken": refresh_token, "screenId": screen_id},
        ) as response:
            assert response.headers["Cache-Control"] == "no-store"
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def serve(tokens: TokenService) -> AsyncIterator[Served]:
    app = Starlette(routes=[make_refresh_route(tokens)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            yield Served(f"http://127.0.0.1:{port}", tokens, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def api(redis: Redis, keyspace: Keyspace) -> AsyncIterator[Served]:
    secrets = JwtSecrets(access=random.token_hex(32), refresh=random.token_hex(32))
    async with serve(TokenService(secrets=secrets, redis=redis, keyspace=keyspace)) as served:
        yield served


async def test_refresh_returns_a_new_pair(api: Served) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "screen")
    status, body = await api.refresh(pair.refresh_token)
    assert status == 200
    assert body.keys() == {"accessToken", "refreshToken", "expiresIn"}
    assert body["expiresIn"] == 900
    claims = api.tokens.verify_access(body["accessToken"])
    assert (claims.user_id, claims.screen_id, claims.role) == ("user-1", "screen-1", "screen")
    status, _ = await api.refresh(body["refreshToken"])
    assert status == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param('["refreshToken", "screenId"]', id="array"),
        pytest.param('"a string"', id="string"),
        pytest.param("null", id="null"),
        pytest.param('{"refreshToken": 5, "screenId": "screen-1"}', id="number-field"),
        pytest.param('{"refreshToken": "t", "screenId": null}', id="null-field"),
        pytest.param('{"refreshToken": "t", "screenId": ["s"]}', id="array-field"),
        pytest.param('{"refreshToken": "t"}', id="missing-screenId"),
        pytest.param('{"screenId": "screen-1"}', id="missing-refreshToken"),
        pytest.param("{}", id="empty-object"),
        pytest.param("[" * 20_000, id="deep-nesting"),
    ],
)
async def test_malformed_bodies_are_400(api: Served, body: str | bytes) -> None:
    status, payload = await api.post(body, **{"Content-Type": "application/json"})
    assert status == 400
    assert payload["code"] == "VALIDATION_ERROR"
    assert payload["error"]


@pytest.mark.parametrize(
    "chunked", [pytest.param(False, id="content-length"), pytest.param(True, id="chunked")]
)
async def test_oversized_body_is_413(api: Served, chunked: bool) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "controller")
    padding = "x" * MAX_BODY_BYTES
    body = f'{{"refreshToken": "{pair.refresh_token}", "screenId": "screen-1", "p": "{padding}"}}'

    async def chunks() -> AsyncIterator[bytes]:
        data = body.encode()
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    url = f"{api.url}/api/auth/refresh"
    async with api.http.post(url, data=chunks() if chunked else body.encode()) as response:
        assert response.status == 413
        assert (await response.json())["code"] == "VALIDATION_ERROR"
    # The refresh token in the refused body was not used.
    status, _ = await api.refresh(pair.refresh_token)
    assert status == 200


async def test_body_of_exactly_the_limit_is_read(api: Served) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "controller")
    head = f'{{"refreshToken": "{pair.refresh_token}", "screenId": "screen-1", "p": "'
    body = head + "x" * (MAX_BODY_BYTES - len(head) - 2) + '"}'
    assert len(body) == MAX_BODY_BYTES
    status, payload = await api.post(body)
    assert status == 200, payload


async def test_reused_refresh_token_is_401_and_revokes_the_family(api: Served) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "controller")
    status, rotated = await api.refresh(pair.refresh_token)
    assert status == 200
    status, body = await api.refresh(pair.refresh_token)
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
    assert body["error"]
    status, body = await api.refresh(rotated["refreshToken"])
    assert (status, body["code"]) == (401, "INVALID_TOKEN")


async def test_screen_mismatch_is_401(api: Served) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "controller")
    status, body = await api.refresh(pair.refresh_token, screen_id="screen-2")
    assert (status, body["code"]) == (401, "INVALID_TOKEN")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        pytest.param("garbage", "INVALID_TOKEN", id="garbage"),
        pytest.param("", "MISSING_TOKEN", id="empty"),
        pytest.param("a.b.c", "INVALID_TOKEN", id="three-parts"),
        pytest.param("x" * 60_000, "INVALID_TOKEN", id="long"),
    ],
)
async def test_bad_refresh_tokens_are_401(api: Served, token: str, code: str) -> None:
    status, body = await api.refresh(token)
    assert (status, body["code"]) == (401, code)


async def test_access_token_is_not_a_refresh_token(api: Served) -> None:
    pair = await api.tokens.issue_pair("user-1", "screen-1", "controller")
    status, body = await api.refresh(pair.access_token)
    assert (status, body["code"]) == (401, "INVALID_TOKEN")


async def test_only_post_is_routed(api: Served) -> None:
    async with api.http.get(f"{api.url}/api/auth/refresh") as response:
        assert response.status == 405


async def test_redis_down_is_503_not_500(redis: Redis, keyspace: Keyspace) -> None:
    secrets = JwtSecrets(access=random.token_hex(32), refresh=random.token_hex(32))
    up = TokenService(secrets=secrets, redis=redis, keyspace=keyspace)
    pair = await up.issue_pair("user-1", "screen-1", "controller")
    down = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        tokens = TokenService(secrets=secrets, redis=down, keyspace=keyspace)
        async with serve(tokens) as served:
            status, body = await served.refresh(pair.refresh_token)
            assert (status, body["code"]) == (503, "INTERNAL_ERROR")
    finally:
        await down.aclose()
