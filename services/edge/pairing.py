"""Pairing a device without copying a token (SPEC 10).

A device asks for a pairing (`POST /api/pair {role}`), shows the 8-character code and polls
`GET /api/pair/{pairingId}` (the id is a 128-bit secret only the device holds). An operator
approves the code with an admin token (`POST /api/pair/approve`) or `rdisplay pair approve`;
the next poll returns the device's tokens, once. Codes are single-use and valid 10 minutes.

Redis holds `{prefix}:pair:{pairingId}` (a hash: role, code, status, expiresAt, and once
approved the tokens, until the device takes them or 10 minutes pass) and
`{prefix}:pair-code:{code}` → pairingId. Every step that decides is one script on one key.
The sorted set `{prefix}:pair-waiting` (member `[code, role, address, requestedAt]`, score its
expiry) is what the operator's page lists as waiting; it only informs, the code key decides.
The page gets only the code's first `HINT_CHARS` characters: anyone may ask for a pairing, so
an approval must still come from reading the code off the device, never from the list.
Requests are counted per client address, approvals per admin (fixed windows in Redis, shared
by every edge).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.codes import ErrorCode
from schemas.errors import RemoteDisplayError
from services.edge.bodies import read_body
from services.edge.tokens import ROLES, Role, TokenError, TokenService, TokenStoreError
from streams.keys import Keyspace
from streams.scripts import Script
from streams.values import as_text

logger = logging.getLogger(__name__)

TAKE = Script("services.edge", "pair_take.lua")
APPROVE = Script("services.edge", "pair_approve.lua")

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen, typed
CODE_LENGTH = 8
PAIRING_TTL_MS = 10 * 60_000
EXPIRED_KEPT_MS = 10 * 60_000  # an expired pairing answers 410 this long, then 404
APPROVED_KEPT_MS = 10 * 60_000  # approved tokens wait this long for their device
RATE_WINDOW_MS = 60_000
PAIR_REQUESTS_PER_WINDOW = 20  # per client address
APPROVALS_PER_WINDOW = 30  # per admin, wrong codes included
MAX_BODY_BYTES = 4096
MAX_LISTED_WAITING = 50
_json_encode = msgspec.json.Encoder().encode
_waiting_member = msgspec.json.Decoder(tuple[str, str, str, int])
HINT_CHARS = 3


class PairingError(RemoteDisplayError):
    """An approval that cannot be done; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Pairing(msgspec.Struct, frozen=True, rename="camel"):
    pairing_id: str
    code: str
    expires_at: int


class Approved(msgspec.Struct, frozen=True, rename="camel"):
    status: str
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: str
    screen_id: str
    role: str

    def __repr__(self) -> str:
        return f"Approved(<tokens redacted>, {self.user_id=}, {self.screen_id=}, {self.role=})"


class PairingService:
    def __init__(
        self,
        *,
        redis: Redis,
        keyspace: Keyspace,
        tokens: TokenService,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._tokens = tokens
        self._clock_ms = clock_ms

    def _pair_key(self, pairing_id: str) -> str:
        return self._keyspace.key("pair", pairing_id)

    def _code_key(self, code: str) -> str:
        return self._keyspace.key("pair-code", code)

    @property
    def _waiting_key(self) -> str:
        return self._keyspace.key("pair-waiting")

    async def waiting(self, limit: int = MAX_LISTED_WAITING) -> list[dict[str, Any]]:
        """Pairings waiting for an approval now, newest first: `{codeHint, role, address,
        requestedAt, expiresAt}` (the code's first characters only: see the module's text)."""
        now = self._clock_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self._waiting_key, "-inf", now)
            pipe.zrange(self._waiting_key, 0, limit - 1, withscores=True, desc=True)
            _removed, found = await pipe.execute()
        listed = []
        for raw, score in found:
            try:
                code, role, address, requested_at = _waiting_member.decode(raw)
            except msgspec.DecodeError:
                continue
            listed.append(
                {
                    "codeHint": code[:HINT_CHARS],
                    "role": role,
                    "address": address,
                    "requestedAt": requested_at,
                    "expiresAt": int(score),
                }
            )
        return listed

    async def allowed(self, kind: str, who: str, limit: int) -> bool:
        """Count one more request of `who` in the current window; False past `limit`."""
        key = self._keyspace.compound(f"pair-rate-{kind}", who)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, RATE_WINDOW_MS, nx=True)
            count, _ = await pipe.execute()
        return int(count) <= limit

    async def request(self, role: Role, *, address: str = "") -> Pairing:
        now = self._clock_ms()
        pairing_id = secrets.token_urlsafe(16)  # 128 bits
        expires_at = now + PAIRING_TTL_MS
        for _ in range(10):  # a code in use by another pairing: draw again
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if await self._redis.set(self._code_key(code), pairing_id, px=PAIRING_TTL_MS, nx=True):
                break
        else:
            msg = "no free pairing code"
            raise PairingError(503, msg, ErrorCode.INTERNAL_ERROR)
        key = self._pair_key(pairing_id)
        listed = _json_encode([code, role, address[:64], now])
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "role": role,
                    "code": code,
                    "status": "waiting",
                    "expiresAt": expires_at,
                    "listed": listed,
                },
            )
            pipe.pexpire(key, PAIRING_TTL_MS + EXPIRED_KEPT_MS)
            await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self._waiting_key, "-inf", now)  # bounded without a page open
            pipe.zadd(self._waiting_key, {listed: expires_at})
            pipe.pexpire(self._waiting_key, PAIRING_TTL_MS)
            await pipe.execute()
        return Pairing(pairing_id=pairing_id, code=code, expires_at=expires_at)

    async def poll(self, pairing_id: str) -> tuple[str, Approved | None]:
        """`waiting`, `expired`, `unknown`, or `approved` with the tokens (once)."""
        reply: list[Any] = await TAKE(
            self._redis, keys=[self._pair_key(pairing_id)], args=[self._clock_ms()]
        )
        status = as_text(reply[0])
        if status != "approved":
            return status, None
        record = {as_text(k): as_text(v) for k, v in zip(reply[1::2], reply[2::2], strict=True)}
        return status, Approved(
            status="approved",
            access_token=record["accessToken"],
            refresh_token=record["refreshToken"],
            expires_in=int(record["expiresIn"]),
            user_id=record["userId"],
            screen_id=record["screenId"],
            role=record["role"],
        )

    async def approve(self, code: str, screen_id: str, user_id: str | None = None) -> str:
        """Approve `code` for `screen_id`; returns the pairing's role. PairingError(404) for
        a code that is wrong, used or expired (the same answer: a guess learns nothing)."""
        code = code.strip().upper()
        if not screen_id.strip():
            msg = "screenId must not be empty"
            raise PairingError(400, msg, ErrorCode.VALIDATION_ERROR)
        unknown = PairingError(404, "no pairing waits for this code (wrong, used or expired)")
        if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
            raise unknown
        raw = await self._redis.get(self._code_key(code))
        if raw is None:
            raise unknown
        key = self._pair_key(as_text(raw))
        role, listed = await self._redis.hmget(key, ["role", "listed"])
        if role is None or as_text(role) not in ROLES:
            raise unknown
        device_role: Role = as_text(role)  # type: ignore[assignment]
        user = user_id or f"{device_role}-{secrets.token_hex(4)}"
        pair = await self._tokens.issue_pair(user, screen_id, device_role)
        fields = {
            "accessToken": pair.access_token,
            "refreshToken": pair.refresh_token,
            "expiresIn": str(pair.expires_in),
            "userId": user,
            "screenId": screen_id,
        }
        args: list[str | int] = [code, self._clock_ms(), APPROVED_KEPT_MS]
        for name, value in fields.items():
            args += (name, value)
        outcome = as_text(await APPROVE(self._redis, keys=[key], args=args))
        if outcome != "approved":
            raise unknown
        await self._redis.delete(self._code_key(code))  # single use
        if listed is not None:
            await self._redis.zrem(self._waiting_key, listed)
        logger.info(
            "pairing approved", extra={"role": device_role, "user_id": user, "screen_id": screen_id}
        )
        return device_role


_NO_STORE = {"Cache-Control": "no-store"}
_request_decoder = msgspec.json.Decoder(dict[str, Any])


def _json(status: int, body: object) -> Response:
    return Response(
        msgspec.json.encode(body), status, headers=_NO_STORE, media_type="application/json"
    )


def _error(status: int, message: str, code: ErrorCode | None = None) -> Response:
    body: dict[str, str] = {"error": message}
    if code is not None:
        body["code"] = code.value
    return _json(status, body)


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        data = await read_body(request, MAX_BODY_BYTES)
    except ClientDisconnect:
        return _error(400, "the request body was cut off", ErrorCode.VALIDATION_ERROR)
    if data is None:
        return _error(413, "the body is over 4 KiB", ErrorCode.VALIDATION_ERROR)
    try:
        return _request_decoder.decode(data)
    except msgspec.DecodeError:
        return _error(400, "the body must be a JSON object", ErrorCode.VALIDATION_ERROR)


def make_pairing_routes(pairing: PairingService, tokens: TokenService) -> list[Route]:
    async def request_pairing(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        role = body.get("role")
        if role not in ROLES:
            msg = f"role must be one of {', '.join(ROLES)}"
            return _error(400, msg, ErrorCode.VALIDATION_ERROR)
        address = request.client.host if request.client is not None else "unknown"
        try:
            if not await pairing.allowed("request", address, PAIR_REQUESTS_PER_WINDOW):
                return _error(
                    429, "too many pairing requests; wait a minute", ErrorCode.RATE_LIMITED
                )
            started = await pairing.request(role, address=address)
        except RedisError:
            logger.exception("pairing request failed: Redis did not answer")
            return _error(503, "the pairing store is unavailable", ErrorCode.INTERNAL_ERROR)
        except PairingError as exc:
            return _error(exc.status, str(exc), exc.code)
        return _json(201, started)

    async def poll(request: Request) -> Response:
        pairing_id = request.path_params["pairing_id"]
        if len(pairing_id) > 64:
            return _error(404, "no such pairing")
        try:
            status, approved = await pairing.poll(pairing_id)
        except RedisError:
            logger.exception("pairing poll failed: Redis did not answer")
            return _error(503, "the pairing store is unavailable", ErrorCode.INTERNAL_ERROR)
        if approved is not None:
            return _json(200, approved)
        if status == "waiting":
            return _json(202, {"status": "waiting"})
        if status == "expired":
            return _error(410, "the pairing code expired: ask for a new one")
        return _error(404, "no such pairing")

    async def approve(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _error(401, "an admin access token is required", ErrorCode.MISSING_TOKEN)
        try:
            claims = tokens.verify_access(header[7:].strip())
        except TokenError as exc:
            return _error(401, str(exc), exc.code)
        if claims.role != "admin":
            return _error(403, "only an admin may approve a pairing", ErrorCode.FORBIDDEN)
        body = await _body(request)
        if isinstance(body, Response):
            return body
        code, screen_id, user_id = body.get("code"), body.get("screenId"), body.get("userId")
        if not isinstance(code, str) or not isinstance(screen_id, str):
            msg = "the body needs code and screenId (strings), userId optional"
            return _error(400, msg, ErrorCode.VALIDATION_ERROR)
        if user_id is not None and (not isinstance(user_id, str) or not user_id.strip()):
            return _error(400, "userId must be a non-empty string", ErrorCode.VALIDATION_ERROR)
        try:
            if not await pairing.allowed("approve", claims.user_id, APPROVALS_PER_WINDOW):
                return _error(429, "too many approvals; wait a minute", ErrorCode.RATE_LIMITED)
            role = await pairing.approve(code, screen_id, user_id)
        except PairingError as exc:
            return _error(exc.status, str(exc), exc.code)
        except (RedisError, TokenStoreError):
            logger.exception("pairing approval failed: Redis did not answer")
            return _error(503, "the pairing store is unavailable", ErrorCode.INTERNAL_ERROR)
        return _json(200, {"status": "approved", "role": role, "screenId": screen_id})

    return [
        Route("/api/pair", request_pairing, methods=["POST"]),
        Route("/api/pair/approve", approve, methods=["POST"]),
        Route("/api/pair/{pairing_id}", poll, methods=["GET"]),
    ]
