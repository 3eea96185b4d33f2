"""Access and refresh tokens (SPEC sections 4 and 5): issue, verify, rotate; the refresh route.

Access tokens are stateless HS256 JWTs (`JWT_SECRET`). Refresh tokens (`JWT_REFRESH_SECRET`) are
single use: Redis records each one's `jti` as unused until it is rotated, and presenting a used one
revokes its whole family (every token descended from one `issue_pair`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Literal, TypeVar

import jwt
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.codes import ErrorCode
from schemas.errors import RemoteDisplayError, UsageError
from services.config.jwt_keys import JwtSecrets
from services.edge.bodies import read_body
from streams.keys import Keyspace
from streams.scripts import Script

logger = logging.getLogger(__name__)

ROTATE = Script("services.edge", "rotate_refresh.lua")


Role = Literal["controller", "screen", "admin"]
ROLES: tuple[Role, ...] = ("controller", "screen", "admin")

ACCESS_TTL_S = 900
REFRESH_TTL_S = 24 * 3600
FAMILY_REVOKED_TTL_S = REFRESH_TTL_S
"""A revoked family is remembered as long as any of its tokens can still be unexpired."""

MAX_TOKEN_CHARS = 8192
MAX_BODY_BYTES = 64 * 1024
_MIN_KEY_BYTES = 32  # RFC 7518 section 3.2 for HS256
_ALGORITHMS = ["HS256"]

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# Refresh ids become Redis key parts: plain characters only.
_Id = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,64}$")]
# NumericDate (RFC 7519): a number of seconds; bounded so that int() of it is always safe.
_Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e11)]


class TokenError(RemoteDisplayError):
    """A token was refused; `code` is what the client is told (e.g. `INVALID_TOKEN`)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenStoreError(RemoteDisplayError):
    """Redis, which records refresh tokens, did not answer."""


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified access token says; times are epoch seconds."""

    user_id: str
    screen_id: str
    role: Role
    jti: str
    iat: int
    exp: int


class TokenPair(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """`{accessToken, refreshToken, expiresIn}`, as `/api/auth/refresh` and the CLI print it."""

    access_token: str
    refresh_token: str
    expires_in: int

    def __repr__(self) -> str:
        return f"TokenPair(access_token=<redacted>, refresh_token=<redacted>, {self.expires_in=})"


class _AccessPayload(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    # Unknown claims are ignored: tokens may be minted elsewhere with more claims.
    user_id: _NonEmpty
    screen_id: _NonEmpty
    role: Role
    typ: Literal["access"]
    jti: _NonEmpty
    iat: _Seconds
    exp: _Seconds
    nbf: _Seconds | None = None


class _RefreshPayload(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True
):
    user_id: _NonEmpty
    screen_id: _NonEmpty
    role: Role
    typ: Literal["refresh"]
    jti: _Id
    fid: _Id
    iat: _Seconds
    exp: _Seconds
    nbf: _Seconds | None = None


_Payload = TypeVar("_Payload", _AccessPayload, _RefreshPayload)

_encoder = msgspec.json.Encoder()
_access_decoder = msgspec.json.Decoder(_AccessPayload)
_refresh_decoder = msgspec.json.Decoder(_RefreshPayload)

# KEYS: the presented refresh token's jti, its family, its successor's jti.
# ARGV: how long a revoked family is remembered, the successor's lifetime (seconds).


def mint_access(
    secret: str, user_id: str, screen_id: str, role: Role, *, ttl_s: int = ACCESS_TTL_S
) -> str:
    """An access token as any issuer may mint it (SPEC 4: every HS256 token signed with
    JWT_SECRET that carries these claims is accepted): for tools that hold the secret and not
    the store (benchmarks, drills). It has no refresh token."""
    _check_subject(user_id, screen_id, role, ttl_s)
    iat = int(time.time())
    claims = _AccessPayload(
        user_id=user_id,
        screen_id=screen_id,
        role=role,
        typ="access",
        jti=str(uuid.uuid4()),
        iat=iat,
        exp=iat + ttl_s,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.PyJWS(algorithms=_ALGORITHMS).encode(
            _encoder.encode(claims), secret, algorithm="HS256"
        )


class TokenService:
    """Issues and checks tokens; refresh tokens are recorded in `redis` under `keyspace`.

    `clock` (epoch seconds) decides `iat` and `exp` and whether a token has expired. On a
    cluster the keys of one refresh family carry the family id as their hash tag, so that a
    rotation (three keys) touches one slot; a single store keeps the plain names.
    """

    def __init__(
        self,
        *,
        secrets: JwtSecrets,
        redis: Redis,
        keyspace: Keyspace,
        clock: Callable[[], float] = time.time,
        cluster: bool = False,
    ) -> None:
        self._secrets = secrets
        self._redis = redis
        self._keyspace = keyspace
        self._cluster = cluster
        self._clock = clock
        self._jws = jwt.PyJWS(algorithms=_ALGORITHMS)
        # Development may configure short keys; say so once instead of a warning per token.
        self._short_keys = any(
            len(key.encode()) < _MIN_KEY_BYTES for key in (secrets.access, secrets.refresh)
        )
        if self._short_keys:
            logger.warning("a JWT secret is shorter than 32 bytes: acceptable in development only")

    def _refresh_key(self, family: str, jti: str) -> str:
        if self._cluster:
            return self._keyspace.key("refresh", f"{{{family}}}", jti)
        return self._keyspace.key("refresh", jti)

    def _family_key(self, family: str) -> str:
        if self._cluster:
            return self._keyspace.key("refresh-family", f"{{{family}}}")
        return self._keyspace.key("refresh-family", family)

    def issue_access(
        self, user_id: str, screen_id: str, role: Role, ttl_s: int = ACCESS_TTL_S
    ) -> tuple[str, int]:
        """A signed access token and its `exp` (epoch seconds)."""
        _check_subject(user_id, screen_id, role, ttl_s)
        iat = int(self._clock())
        exp = iat + ttl_s
        claims = _AccessPayload(
            user_id=user_id,
            screen_id=screen_id,
            role=role,
            typ="access",
            jti=str(uuid.uuid4()),
            iat=iat,
            exp=exp,
        )
        return self._sign(claims, self._secrets.access), exp

    def verify_access(self, token: str | None) -> AccessClaims:
        """The claims of a valid access token; raises TokenError with the reason's code."""
        payload = self._verify(token, self._secrets.access, _access_decoder)
        return AccessClaims(
            user_id=payload.user_id,
            screen_id=payload.screen_id,
            role=payload.role,
            jti=payload.jti,
            iat=int(payload.iat),
            exp=int(payload.exp),
        )

    async def issue_pair(
        self, user_id: str, screen_id: str, role: Role, ttl_s: int = ACCESS_TTL_S
    ) -> TokenPair:
        """A new session: an access token and the first refresh token of a new family."""
        _check_subject(user_id, screen_id, role, ttl_s)
        family = uuid.uuid4().hex
        pair, jti = self._mint_pair(user_id, screen_id, role, ttl_s, family=family)
        try:
            await self._redis.set(self._refresh_key(family, jti), "unused", ex=REFRESH_TTL_S)
        except RedisError as exc:
            msg = f"could not record the refresh token in Redis: {exc}"
            raise TokenStoreError(msg) from exc
        return pair

    async def rotate(self, refresh_token: str, screen_id: str) -> TokenPair:
        """Exchange a refresh token, once, for a new pair of the same user, screen and role."""
        claims = self._verify(refresh_token, self._secrets.refresh, _refresh_decoder)
        if screen_id != claims.screen_id:
            raise TokenError(ErrorCode.INVALID_TOKEN, "the refresh token is for another screen")
        pair, jti = self._mint_pair(
            claims.user_id, claims.screen_id, claims.role, ACCESS_TTL_S, family=claims.fid
        )
        keys = [
            self._refresh_key(claims.fid, claims.jti),
            self._family_key(claims.fid),
            self._refresh_key(claims.fid, jti),
        ]
        try:
            raw = await ROTATE(self._redis, keys=keys, args=[FAMILY_REVOKED_TTL_S, REFRESH_TTL_S])
        except RedisError as exc:
            msg = f"could not check the refresh token in Redis: {exc}"
            raise TokenStoreError(msg) from exc
        outcome = raw.decode() if isinstance(raw, bytes) else str(raw)
        if outcome == "rotated":
            return pair
        log = {"user_id": claims.user_id, "screen_id": claims.screen_id, "family": claims.fid}
        if outcome == "reused":
            logger.warning("refresh token used twice: its family is revoked", extra=log)
            msg = "the refresh token was already used: every token of its session is revoked"
        elif outcome == "revoked":
            logger.info("refresh token of a revoked family refused", extra=log)
            msg = "the refresh token's session was revoked: sign in again"
        else:
            msg = "the refresh token is not known here: sign in again"
        raise TokenError(ErrorCode.INVALID_TOKEN, msg)

    def _mint_pair(
        self, user_id: str, screen_id: str, role: Role, ttl_s: int, *, family: str
    ) -> tuple[TokenPair, str]:
        access, _exp = self.issue_access(user_id, screen_id, role, ttl_s)
        iat = int(self._clock())
        jti = uuid.uuid4().hex
        claims = _RefreshPayload(
            user_id=user_id,
            screen_id=screen_id,
            role=role,
            typ="refresh",
            jti=jti,
            fid=family,
            iat=iat,
            exp=iat + REFRESH_TTL_S,
        )
        refresh = self._sign(claims, self._secrets.refresh)
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl_s), jti

    def _sign(self, claims: _AccessPayload | _RefreshPayload, key: str) -> str:
        with self._quiet():
            return self._jws.encode(_encoder.encode(claims), key, algorithm="HS256")

    def _verify(
        self, token: str | None, key: str, decoder: msgspec.json.Decoder[_Payload]
    ) -> _Payload:
        if not token:
            raise TokenError(ErrorCode.MISSING_TOKEN, "no token was sent")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(ErrorCode.INVALID_TOKEN, "the token is too long")
        try:
            with self._quiet():
                # Only the signature here (the allow-list refuses `none`, HS512, RS256, ...);
                # the claims are checked by the struct and against our clock below.
                signed = self._jws.decode_complete(token, key, algorithms=_ALGORITHMS)
            payload = decoder.decode(signed["payload"])
        # PyJWT maps malformed input to PyJWTError; ValueError and TypeError guard the rest.
        except (jwt.PyJWTError, msgspec.DecodeError, ValueError, TypeError):
            raise TokenError(ErrorCode.INVALID_TOKEN, "the token is not valid") from None
        now = self._clock()
        if payload.nbf is not None and payload.nbf > now:
            raise TokenError(ErrorCode.INVALID_TOKEN, "the token is not valid yet")
        if payload.exp <= now:
            raise TokenError(ErrorCode.TOKEN_EXPIRED, "the token has expired")
        return payload

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        if not self._short_keys:
            yield
            return
        # No await happens inside, so this process-wide filter cannot leak into other tasks.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            yield


def require_same_subject(current: AccessClaims, renewed: AccessClaims) -> None:
    """`auth:refresh` may only extend a connection's own identity (else FORBIDDEN)."""
    if (current.user_id, current.screen_id, current.role) != (
        renewed.user_id,
        renewed.screen_id,
        renewed.role,
    ):
        msg = "the new token must carry the connection's userId, screenId and role"
        raise TokenError(ErrorCode.FORBIDDEN, msg)


def _check_subject(user_id: str, screen_id: str, role: str, ttl_s: int) -> None:
    if not user_id or not screen_id:
        msg = "a token needs a non-empty user id and screen id"
        raise UsageError(msg)
    if role not in ROLES:
        msg = f"role `{role}` is not one of {', '.join(ROLES)}"
        raise UsageError(msg)
    if ttl_s <= 0:
        msg = f"token lifetime `{ttl_s}` must be a positive number of seconds"
        raise UsageError(msg)


class _ErrorBody(msgspec.Struct, frozen=True):
    error: str
    code: ErrorCode


_body_decoder = msgspec.json.Decoder(dict[str, str])
_NO_STORE = {"Cache-Control": "no-store"}  # RFC 6749 section 5.1: token responses


def _json(status: int, body: TokenPair | _ErrorBody) -> Response:
    return Response(_encoder.encode(body), status, headers=_NO_STORE, media_type="application/json")


def _refused(status: int, code: ErrorCode, error: str) -> Response:
    return _json(status, _ErrorBody(error=error, code=code))


def make_refresh_route(tokens: TokenService) -> Route:
    """`POST /api/auth/refresh {refreshToken, screenId}` → a new TokenPair (SPEC section 5)."""

    async def refresh(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except ClientDisconnect:
            return _refused(400, ErrorCode.VALIDATION_ERROR, "the request body was cut off")
        if body is None:
            return _refused(413, ErrorCode.VALIDATION_ERROR, "the body is over 64 KiB")
        try:
            fields = _body_decoder.decode(body)
        except msgspec.DecodeError:
            msg = "the body must be a JSON object of strings: {refreshToken, screenId}"
            return _refused(400, ErrorCode.VALIDATION_ERROR, msg)
        refresh_token, screen_id = fields.get("refreshToken"), fields.get("screenId")
        if refresh_token is None or screen_id is None:
            msg = "the body needs both refreshToken and screenId"
            return _refused(400, ErrorCode.VALIDATION_ERROR, msg)
        try:
            pair = await tokens.rotate(refresh_token, screen_id)
        except TokenError as exc:
            return _refused(401, exc.code, str(exc))
        except TokenStoreError:
            logger.exception("token refresh failed: Redis did not answer")
            return _refused(503, ErrorCode.INTERNAL_ERROR, "the token store is unavailable")
        return _json(200, pair)

    return Route("/api/auth/refresh", refresh, methods=["POST"])
