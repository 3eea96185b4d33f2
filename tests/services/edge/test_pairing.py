"""Pairing over real HTTP against a real edge and Redis (SPEC 10): request, approve, poll."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from services.edge import pairing as pairing_module
from services.edge.pairing import CODE_ALPHABET, PairingError, PairingService
from streams.keys import Keyspace
from tests.conftest import SettingsFactory
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, connect, mint, running_edge

CODE = re.compile(f"^[{CODE_ALPHABET}]{{8}}$")


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()


def _admin(user: str = "operator-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(user=user, screen='ops', role='admin')}"}


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Any:
    return make_settings(JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET)


async def test_a_screen_pairs_and_its_tokens_are_handed_out_once(settings: Any) -> None:
    async with running_edge(settings) as edge, aiohttp.ClientSession() as http:
        status, started = await _call(http, "POST", f"{edge.url}/api/pair", json={"role": "screen"})
        assert status == 201
        assert CODE.match(started["code"])
        assert len(started["pairingId"]) >= 22  # 128 bits, URL-safe base64
        poll = f"{edge.url}/api/pair/{started['pairingId']}"
        assert await _call(http, "GET", poll) == (202, {"status": "waiting"})

        status, body = await _call(
            http,
            "POST",
            f"{edge.url}/api/pair/approve",
            json={"code": started["code"].lower(), "screenId": "kiosk-7"},
            headers=_admin(),
        )
        assert (status, body) == (
            200,
            {"status": "approved", "role": "screen", "screenId": "kiosk-7"},
        )

        status, tokens = await _call(http, "GET", poll)
        assert status == 200
        assert tokens["status"] == "approved"
        assert (tokens["role"], tokens["screenId"], tokens["expiresIn"]) == (
            "screen",
            "kiosk-7",
            900,
        )
        assert tokens["userId"].startswith("screen-")
        assert await _call(http, "GET", poll) == (404, {"error": "no such pairing"})  # once

        # The tokens are real: the screen connects with the access token, and the refresh
        # token renews it.
        screen = await connect(edge.url, tokens["accessToken"])
        await screen.sio.disconnect()
        status, renewed = await _call(
            http,
            "POST",
            f"{edge.url}/api/auth/refresh",
            json={"refreshToken": tokens["refreshToken"], "screenId": "kiosk-7"},
        )
        assert status == 200
        assert renewed["accessToken"]

        # The code was single use.
        status, body = await _call(
            http,
            "POST",
            f"{edge.url}/api/pair/approve",
            json={"code": started["code"], "screenId": "kiosk-8"},
            headers=_admin(),
        )
        assert status == 404


async def test_approval_needs_an_admin_and_a_waiting_code(settings: Any) -> None:
    async with running_edge(settings) as edge, aiohttp.ClientSession() as http:
        _, started = await _call(http, "POST", f"{edge.url}/api/pair", json={"role": "controller"})
        approve = f"{edge.url}/api/pair/approve"
        body = {"code": started["code"], "screenId": "kiosk-1", "userId": "scanner-3"}
        status, answer = await _call(http, "POST", approve, json=body)
        assert (status, answer["code"]) == (401, "MISSING_TOKEN")
        status, answer = await _call(
            http, "POST", approve, json=body, headers={"Authorization": "Bearer nonsense"}
        )
        assert (status, answer["code"]) == (401, "INVALID_TOKEN")
        status, answer = await _call(
            http,
            "POST",
            approve,
            json=body,
            headers={"Authorization": f"Bearer {mint(role='controller')}"},
        )
        assert (status, answer["code"]) == (403, "FORBIDDEN")
        for wrong in ("AAAAAAAA", "short", "0OIL1OIL", ""):
            status, _ = await _call(
                http, "POST", approve, json={**body, "code": wrong}, headers=_admin()
            )
            assert status == 404, wrong
        status, answer = await _call(
            http, "POST", approve, json={"code": started["code"]}, headers=_admin()
        )
        assert (status, answer["code"]) == (400, "VALIDATION_ERROR")
        # Nothing above used the code up.
        assert (await _call(http, "POST", approve, json=body, headers=_admin()))[0] == 200
        _, tokens = await _call(http, "GET", f"{edge.url}/api/pair/{started['pairingId']}")
        assert (tokens["role"], tokens["userId"], tokens["screenId"]) == (
            "controller",
            "scanner-3",
            "kiosk-1",
        )


async def test_bad_requests_and_unknown_pairings(settings: Any) -> None:
    async with running_edge(settings) as edge, aiohttp.ClientSession() as http:
        bodies: list[object] = [{"role": "root"}, {}, [], {"role": ["screen"]}]
        for body in bodies:
            status, answer = await _call(http, "POST", f"{edge.url}/api/pair", json=body)
            assert (status, answer["code"]) == (400, "VALIDATION_ERROR"), body
        status, answer = await _call(
            http, "POST", f"{edge.url}/api/pair", data=b"{" + b" " * 5000 + b"}"
        )
        assert status == 413
        assert (await _call(http, "GET", f"{edge.url}/api/pair/guess"))[0] == 404


async def test_pairing_requests_and_approvals_are_rate_limited(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pairing_module, "PAIR_REQUESTS_PER_WINDOW", 3)
    monkeypatch.setattr(pairing_module, "APPROVALS_PER_WINDOW", 4)
    async with running_edge(settings) as edge, aiohttp.ClientSession() as http:
        statuses = [
            (await _call(http, "POST", f"{edge.url}/api/pair", json={"role": "screen"}))[0]
            for _ in range(5)
        ]
        assert statuses == [201, 201, 201, 429, 429]
        # Brute force of codes: after the limit even a right code is refused for now.
        approve = f"{edge.url}/api/pair/approve"
        answers = [
            (
                await _call(
                    http,
                    "POST",
                    approve,
                    json={"code": f"AAAAAAA{c}", "screenId": "s"},
                    headers=_admin("greedy"),
                )
            )[0]
            for c in "ABCDEF"
        ]
        assert answers == [404, 404, 404, 404, 429, 429]
        # Counted per admin: another admin is not held up.
        status, _ = await _call(
            http, "POST", approve, json={"code": "AAAAAAAA", "screenId": "s"}, headers=_admin()
        )
        assert status == 404


async def test_an_expired_code_is_refused_and_its_poll_says_gone(
    redis: Redis, keyspace: Keyspace, settings: Any
) -> None:
    now = [1_000_000]
    async with running_edge(settings) as edge:
        service = PairingService(
            redis=redis, keyspace=keyspace, tokens=edge.edge.tokens, clock_ms=lambda: now[0]
        )
        started = await service.request("screen")
        now[0] += pairing_module.PAIRING_TTL_MS + 1
        with pytest.raises(PairingError) as refused:
            await service.approve(started.code, "kiosk-1")
        assert refused.value.status == 404
        assert await service.poll(started.pairing_id) == ("expired", None)
        # Through HTTP, on the edge's own clock: the record's expiresAt is long past, so 410.
        async with aiohttp.ClientSession() as http:
            status, answer = await _call(http, "GET", f"{edge.url}/api/pair/{started.pairing_id}")
        assert status == 410
        assert "expired" in answer["error"]
