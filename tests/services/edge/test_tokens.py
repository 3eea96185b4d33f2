"""TokenService against a real Redis: what is accepted, what is refused and why, rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets as random
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from schemas.codes import ErrorCode
from services.config.jwt_keys import JwtSecrets
from services.edge.tokens import (
    REFRESH_TTL_S,
    AccessClaims,
    TokenError,
    TokenPair,
    TokenService,
    TokenStoreError,
    require_same_subject,
)
from streams.keys import Keyspace
from tests.helpers import free_port

NOW = 1_764_288_000.0


class Clock:
    """The injected clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secrets() -> JwtSecrets:
    return JwtSecrets(access=random.token_hex(32), refresh=random.token_hex(32))


@pytest.fixture
def tokens(secrets: JwtSecrets, redis: Redis, keyspace: Keyspace, clock: Clock) -> TokenService:
    return TokenService(secrets=secrets, redis=redis, keyspace=keyspace, clock=clock)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(claims: object, key: str, *, alg: str = "HS256") -> str:
    """A JWS built by hand, as a client or another issuer (or an attacker) would."""
    header = b64(msgspec.json.encode({"alg": alg, "typ": "JWT"}))
    signing_input = f"{header}.{b64(msgspec.json.encode(claims))}"
    digest = {"none": None, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    if digest is None:
        return f"{signing_input}."
    signature = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def access_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "userId": "user-1",
        "screenId": "screen-1",
        "role": "controller",
        "typ": "access",
        "jti": str(uuid.uuid4()),
        "iat": int(NOW),
        "exp": int(NOW) + 900,
    }
    for name, value in changes.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    return claims


def test_issued_access_token_verifies(tokens: TokenService) -> None:
    token, exp = tokens.issue_access("user-1", "screen-1", "controller")
    claims = tokens.verify_access(token)
    assert claims == AccessClaims(
        user_id="user-1",
        screen_id="screen-1",
        role="controller",
        jti=claims.jti,
        iat=int(NOW),
        exp=int(NOW) + 900,
    )
    assert exp == claims.exp
    uuid.UUID(claims.jti)


def test_issued_claims_are_the_spec_claims(tokens: TokenService, secrets: JwtSecrets) -> None:
    token, _exp = tokens.issue_access("u", "s", "screen", ttl_s=60)
    header, payload, _sig = token.split(".")
    assert msgspec.json.decode(base64.urlsafe_b64decode(header + "==")) == {
        "alg": "HS256",
        "typ": "JWT",
    }
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="))
    assert set(claims) == {"userId", "screenId", "role", "typ", "jti", "iat", "exp"}
    assert (claims["typ"], claims["role"], claims["exp"] - claims["iat"]) == (
        "access",
        "screen",
        60,
    )


@pytest.mark.parametrize("role", ["controller", "screen", "admin"])
def test_token_minted_elsewhere_is_accepted(
    tokens: TokenService, secrets: JwtSecrets, role: str
) -> None:
    token = craft(access_claims(role=role, iss="another-issuer", aud="x"), secrets.access)
    claims = tokens.verify_access(token)
    assert (claims.user_id, claims.screen_id, claims.role) == ("user-1", "screen-1", role)


def refused(
    code: ErrorCode, make: Callable[[TokenService, JwtSecrets], str | None], id: str
) -> Any:
    return pytest.param(code, make, id=id)


INVALID = ErrorCode.INVALID_TOKEN


@pytest.mark.parametrize(
    ("code", "make"),
    [
        refused(ErrorCode.MISSING_TOKEN, lambda t, s: None, "missing"),
        refused(ErrorCode.MISSING_TOKEN, lambda t, s: "", "empty"),
        refused(INVALID, lambda t, s: "garbage", "garbage"),
        refused(INVALID, lambda t, s: "a.b.c", "garbage-three-parts"),
        refused(INVALID, lambda t, s: "x" * 10_000, "too-long"),
        refused(INVALID, lambda t, s: craft(access_claims(), "", alg="none"), "alg-none"),
        refused(INVALID, lambda t, s: craft(access_claims(), s.access, alg="HS512"), "HS512"),
        refused(INVALID, lambda t, s: craft(access_claims(), s.access, alg="RS256"), "RS256"),
        refused(INVALID, lambda t, s: craft(access_claims(), "x" * 64), "wrong-secret"),
        refused(INVALID, lambda t, s: craft(access_claims(), s.refresh), "refresh-secret"),
        refused(INVALID, lambda t, s: craft(access_claims(typ="refresh"), s.access), "typ-refresh"),
        refused(INVALID, lambda t, s: craft(access_claims(typ=None), s.access), "no-typ"),
        refused(
            ErrorCode.TOKEN_EXPIRED,
            lambda t, s: craft(access_claims(exp=int(NOW) - 1), s.access),
            "expired",
        ),
        refused(
            ErrorCode.TOKEN_EXPIRED,
            lambda t, s: craft(access_claims(exp=int(NOW)), s.access),
            "expires-now",
        ),
        refused(INVALID, lambda t, s: craft(access_claims(role=None), s.access), "missing-role"),
        refused(INVALID, lambda t, s: craft(access_claims(role="root"), s.access), "unknown-role"),
        refused(INVALID, lambda t, s: craft(access_claims(userId=None), s.access), "no-userId"),
        refused(INVALID, lambda t, s: craft(access_claims(screenId=None), s.access), "no-screenId"),
        refused(INVALID, lambda t, s: craft(access_claims(userId=""), s.access), "empty-userId"),
        refused(INVALID, lambda t, s: craft(access_claims(userId=7), s.access), "int-userId"),
        refused(INVALID, lambda t, s: craft(access_claims(exp="later"), s.access), "str-exp"),
        refused(INVALID, lambda t, s: craft(access_claims(exp=True), s.access), "bool-exp"),
        refused(INVALID, lambda t, s: craft(access_claims(exp=1e300), s.access), "huge-exp"),
        refused(INVALID, lambda t, s: craft(access_claims(jti=None), s.access), "no-jti"),
        refused(
            INVALID, lambda t, s: craft(access_claims(nbf=int(NOW) + 60), s.access), "not-before"
        ),
        refused(INVALID, lambda t, s: craft(["not", "an", "object"], s.access), "array-payload"),
    ],
)
def test_refused_access_tokens(
    tokens: TokenService,
    secrets: JwtSecrets,
    code: ErrorCode,
    make: Callable[[TokenService, JwtSecrets], str | None],
) -> None:
    with pytest.raises(TokenError) as refusal:
        tokens.verify_access(make(tokens, secrets))
    assert refusal.value.code is code


async def test_refresh_token_is_not_an_access_token(tokens: TokenService) -> None:
    pair = await tokens.issue_pair("user-1", "screen-1", "controller")
    with pytest.raises(TokenError) as refusal:
        tokens.verify_access(pair.refresh_token)
    assert refusal.value.code is ErrorCode.INVALID_TOKEN


async def test_equal_keys_still_keep_the_two_kinds_apart(
    redis: Redis, keyspace: Keyspace, secrets: JwtSecrets
) -> None:
    same = TokenService(
        secrets=JwtSecrets(access=secrets.access, refresh=secrets.access),
        redis=redis,
        keyspace=keyspace,
    )
    pair = await same.issue_pair("user-1", "screen-1", "controller")
    with pytest.raises(TokenError) as refusal:
        same.verify_access(pair.refresh_token)
    assert refusal.value.code is ErrorCode.INVALID_TOKEN
    with pytest.raises(TokenError):
        await same.rotate(pair.access_token, "screen-1")


def test_access_token_expires_by_the_clock(tokens: TokenService, clock: Clock) -> None:
    token, exp = tokens.issue_access("user-1", "screen-1", "admin", ttl_s=60)
    clock.now = exp - 0.5
    assert tokens.verify_access(token).role == "admin"
    clock.now = exp
    with pytest.raises(TokenError) as refusal:
        tokens.verify_access(token)
    assert refusal.value.code is ErrorCode.TOKEN_EXPIRED


async def test_issue_pair_records_the_refresh_token(
    tokens: TokenService, redis: Redis, keyspace: Keyspace
) -> None:
    pair = await tokens.issue_pair("user-1", "screen-1", "screen", ttl_s=120)
    assert pair.expires_in == 120
    assert msgspec.json.decode(msgspec.json.encode(pair)).keys() == {
        "accessToken",
        "refreshToken",
        "expiresIn",
    }
    assert tokens.verify_access(pair.access_token).role == "screen"
    payload = pair.refresh_token.split(".")[1]
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="))
    assert claims["typ"] == "refresh"
    assert claims["exp"] - claims["iat"] == REFRESH_TTL_S
    assert (claims["userId"], claims["screenId"], claims["role"]) == (
        "user-1",
        "screen-1",
        "screen",
    )
    key = keyspace.key("refresh", claims["jti"])
    assert await redis.get(key) == b"unused"
    assert REFRESH_TTL_S - 5 < await redis.ttl(key) <= REFRESH_TTL_S
    assert "refresh" not in repr(pair).replace("refresh_token=<redacted>", "")


async def test_rotation_keeps_identity_and_family(tokens: TokenService, clock: Clock) -> None:
    first = await tokens.issue_pair("user-1", "screen-1", "admin", ttl_s=60)
    clock.now += 30
    second = await tokens.rotate(first.refresh_token, "screen-1")
    assert second.expires_in == 900
    assert second.refresh_token != first.refresh_token
    claims = tokens.verify_access(second.access_token)
    assert (claims.user_id, claims.screen_id, claims.role) == ("user-1", "screen-1", "admin")
    assert claims.exp == int(clock.now) + 900

    def family(pair: TokenPair) -> str:
        payload = pair.refresh_token.split(".")[1]
        fid: str = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="))["fid"]
        return fid

    assert family(second) == family(first)
    third = await tokens.rotate(second.refresh_token, "screen-1")
    assert family(third) == family(first)


async def test_reuse_revokes_the_whole_family(tokens: TokenService) -> None:
    first = await tokens.issue_pair("user-1", "screen-1", "controller")
    other_session = await tokens.issue_pair("user-1", "screen-1", "controller")
    second = await tokens.rotate(first.refresh_token, "screen-1")

    with pytest.raises(TokenError) as reuse:
        await tokens.rotate(first.refresh_token, "screen-1")
    assert reuse.value.code is ErrorCode.INVALID_TOKEN
    assert "already used" in str(reuse.value)

    with pytest.raises(TokenError) as descendant:
        await tokens.rotate(second.refresh_token, "screen-1")
    assert descendant.value.code is ErrorCode.INVALID_TOKEN
    assert "revoked" in str(descendant.value)

    # Another session of the same user is not touched.
    assert (await tokens.rotate(other_session.refresh_token, "screen-1")).expires_in == 900


async def test_concurrent_rotations_of_one_token_let_one_win(tokens: TokenService) -> None:
    first = await tokens.issue_pair("user-1", "screen-1", "controller")
    results = await asyncio.gather(
        *(tokens.rotate(first.refresh_token, "screen-1") for _ in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, TokenPair)]
    assert len(winners) == 1
    assert all(isinstance(r, TokenError) for r in results if r is not winners[0])
    # The reuse revoked the family, the winner's successor included.
    with pytest.raises(TokenError):
        await tokens.rotate(winners[0].refresh_token, "screen-1")


async def test_screen_mismatch_is_refused_and_does_not_use_the_token(
    tokens: TokenService,
) -> None:
    pair = await tokens.issue_pair("user-1", "screen-1", "controller")
    with pytest.raises(TokenError) as mismatch:
        await tokens.rotate(pair.refresh_token, "screen-2")
    assert mismatch.value.code is ErrorCode.INVALID_TOKEN
    assert (await tokens.rotate(pair.refresh_token, "screen-1")).expires_in == 900


async def test_expired_refresh_token(tokens: TokenService, clock: Clock) -> None:
    pair = await tokens.issue_pair("user-1", "screen-1", "controller")
    clock.now += REFRESH_TTL_S
    with pytest.raises(TokenError) as refusal:
        await tokens.rotate(pair.refresh_token, "screen-1")
    assert refusal.value.code is ErrorCode.TOKEN_EXPIRED


def refresh_claims(**changes: Any) -> dict[str, Any]:
    claims = access_claims(typ="refresh", jti=uuid.uuid4().hex, exp=int(NOW) + REFRESH_TTL_S)
    claims["fid"] = uuid.uuid4().hex
    claims.update(changes)
    return claims


@pytest.mark.parametrize(
    ("code", "make"),
    [
        refused(ErrorCode.MISSING_TOKEN, lambda t, s: "", "empty"),
        refused(INVALID, lambda t, s: "garbage", "garbage"),
        refused(
            INVALID, lambda t, s: t.issue_access("user-1", "screen-1", "controller")[0], "access"
        ),
        refused(INVALID, lambda t, s: craft(refresh_claims(), s.refresh), "never-recorded"),
        refused(INVALID, lambda t, s: craft(refresh_claims(), s.access), "access-secret"),
        refused(INVALID, lambda t, s: craft(refresh_claims(), s.refresh, alg="HS512"), "HS512"),
        refused(INVALID, lambda t, s: craft(refresh_claims(jti="a:b"), s.refresh), "odd-jti"),
        refused(INVALID, lambda t, s: craft(refresh_claims(fid=None), s.refresh), "no-family"),
    ],
)
async def test_refused_refresh_tokens(
    tokens: TokenService,
    secrets: JwtSecrets,
    code: ErrorCode,
    make: Callable[[TokenService, JwtSecrets], str],
) -> None:
    with pytest.raises(TokenError) as refusal:
        await tokens.rotate(make(tokens, secrets), "screen-1")
    assert refusal.value.code is code


async def test_short_development_keys_work_without_warnings(
    redis: Redis, keyspace: Keyspace
) -> None:
    short = TokenService(
        secrets=JwtSecrets(access="dev", refresh="dev-refresh"), redis=redis, keyspace=keyspace
    )
    pair = await short.issue_pair("user-1", "screen-1", "controller")
    assert short.verify_access(pair.access_token).user_id == "user-1"
    assert (await short.rotate(pair.refresh_token, "screen-1")).expires_in == 900


async def test_redis_down_is_a_token_store_error(secrets: JwtSecrets, keyspace: Keyspace) -> None:
    down = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        tokens = TokenService(secrets=secrets, redis=down, keyspace=keyspace)
        with pytest.raises(TokenStoreError):
            await tokens.issue_pair("user-1", "screen-1", "controller")
        # Verifying access tokens never needs Redis.
        token, _exp = tokens.issue_access("user-1", "screen-1", "controller")
        assert tokens.verify_access(token).user_id == "user-1"
    finally:
        await down.aclose()


@pytest.mark.parametrize(
    "renewed",
    [
        pytest.param({"user_id": "user-2"}, id="other-user"),
        pytest.param({"screen_id": "screen-2"}, id="other-screen"),
        pytest.param({"role": "admin"}, id="other-role"),
    ],
)
def test_refresh_of_a_connection_must_keep_its_identity(renewed: dict[str, Any]) -> None:
    current = AccessClaims(
        user_id="user-1", screen_id="screen-1", role="controller", jti="a", iat=1, exp=2
    )
    require_same_subject(current, msgspec.structs.replace(current, jti="b", exp=3))
    with pytest.raises(TokenError) as refusal:
        require_same_subject(current, msgspec.structs.replace(current, **renewed))
    assert refusal.value.code is ErrorCode.FORBIDDEN
