"""The Socket.IO handlers (SPEC 4): connect, disconnect, `trigger`, `trigger:status`,
`auth:refresh`. Each answers with an ack body; none lets an exception reach the client."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from observability.metrics import Metrics
from schemas import codec
from schemas.codes import ErrorCode
from schemas.events import TriggerProjected
from schemas.wire import failure_ack
from services.config.settings import Settings
from services.edge.desk import WINDOW_COUNT, TriggerDesk
from services.edge.displays import DisplayDispatcher, display_of, screen_room
from services.edge.presence import EdgePresence
from services.edge.sessions import Sessions
from services.edge.sio import EdgeServer
from services.edge.tokens import AccessClaims, TokenError, TokenService, require_same_subject
from services.keys import ProjectionField, screen_key
from streams.batcher import PipelineBatcher
from streams.fence import ReplicaFence
from streams.ids import is_newer
from streams.partitions import Partitions
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)


Ack = dict[str, Any]


class SocketHandlers:
    """What the edge does for each Socket.IO event; `register` installs them on the server."""

    def __init__(
        self,
        *,
        settings: Settings,
        sio: EdgeServer,
        sessions: Sessions,
        tokens: TokenService,
        desk: TriggerDesk,
        displays: DisplayDispatcher,
        redis: Redis,
        batcher: PipelineBatcher,
        partitions: Partitions,
        fence: ReplicaFence | None = None,
        presence: EdgePresence | None = None,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._sio = sio
        self._sessions = sessions
        self._tokens = tokens
        self._desk = desk
        self._displays = displays
        self._redis = redis
        self._batcher = batcher
        self._partitions = partitions
        self._fence = fence
        self._presence = presence
        self._metrics = metrics

    def register(self) -> None:
        sio = self._sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("trigger", self.on_trigger)
        sio.on("trigger:status", self.on_status)
        sio.on("auth:refresh", self.on_refresh)

    # -- connect and disconnect -----------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not self._origin_allowed(environ):
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.ORIGIN_NOT_ALLOWED.value)
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is not None and not isinstance(token, str):
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.INVALID_TOKEN.value)
        if not token:
            header = environ.get("HTTP_AUTHORIZATION", "")
            if header[:7].lower() == "bearer ":
                token = header[7:].strip()
        try:
            claims = self._tokens.verify_access(token if isinstance(token, str) else None)
        except TokenError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.code.value) from None
        if not await self._may_connect(claims):
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.RATE_LIMITED.value)
        connection = self._sessions.add(sid, claims)
        if claims.role == "screen":
            await self._sio.enter_room(sid, screen_room(claims.screen_id))
            if self._presence is not None:
                await self._presence.arrived(claims.screen_id)
            last = auth.get("lastEventId") if isinstance(auth, dict) else None
            await self._recover_screen(
                sid, claims.screen_id, last if isinstance(last, str) else None
            )
        else:
            await self._sio.enter_room(sid, f"user:{claims.user_id}")
        if self._sessions.inside_warning_window(claims):
            connection.warned = True  # at once: before the answer to its first request
            await self._sio.emit("auth:expiring", {"expiresAt": claims.exp}, to=sid)

    def _origin_allowed(self, environ: dict[str, Any]) -> bool:
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return True  # native clients send none
        allowed = self._settings.allowed_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        # The edge's own pages (SPEC 10): the page's origin is the address the browser used
        # for this very request. The scheme is not compared: behind a TLS proxy the edge sees
        # http while the page is https.
        netloc = urlsplit(origin).netloc.lower()
        return bool(netloc) and netloc == environ.get("HTTP_HOST", "").lower()

    async def _may_connect(self, claims: AccessClaims) -> bool:
        """At most RATE_LIMIT_MAX_REQUESTS connections per RATE_LIMIT_WINDOW for one token
        identity (user, screen, role), counted on every edge: a device in a reconnect loop is
        refused with RATE_LIMITED. Per identity, not per user: the screens of a shop that
        share one userId all reconnect at once after an edge restart, and must get in."""
        key = self._partitions.root.compound(
            "connects", claims.user_id, claims.screen_id, claims.role
        )
        try:
            count = await self._batcher.evalsha(
                WINDOW_COUNT, [key], [self._settings.rate_limit_window_ms]
            )
        except RedisError as exc:  # fail open: without Redis the edge cannot limit anything
            logger.warning("connection rate not counted", extra={"error": str(exc)})
            return True
        return int(count) <= self._settings.rate_limit_max_requests

    async def _recover_screen(self, sid: str, screen_id: str, last_event_id: str | None) -> None:
        space = self._partitions.for_screen(screen_id)
        projection = await self._redis.hgetall(screen_key(space, screen_id))
        if not projection:
            return
        event_id = as_text(projection[ProjectionField.EVENT_ID.encode()])
        if last_event_id is not None:
            try:
                if not is_newer(event_id, last_event_id):
                    return
            except ValueError:
                pass  # an unparsable lastEventId counts as none
        if self._fence is not None and not await self._fence.hold(space, (space.events, event_id)):
            return  # REDIS_WAIT_REPLICAS: shown only once replicated; lost in a failover
        data = projection[ProjectionField.DATA.encode()]
        fields = {b"type": b"trigger.projected", b"v": b"1", b"data": _bytes(data)}
        event = codec.decode_event(fields)
        if isinstance(event, TriggerProjected):
            payload = display_of(event_id, event, now_ms())
            await self._displays.send(sid, screen_id, msgspec.to_builtins(payload))

    async def resend_current(self, screen_id: str) -> int:
        """The screen's current display again, to each of its sockets on this edge (the
        operator's resend); how many sockets it went to."""
        sids = list(self._sio.in_room(screen_room(screen_id)))
        for sid in sids:
            await self._recover_screen(sid, screen_id, None)
        return len(sids)

    async def on_disconnect(self, sid: str, _reason: Any = None) -> None:
        connection = self._sessions.get(sid)
        self._sessions.forget(sid)
        self._displays.forget_socket(sid)
        screen = connection is not None and connection.claims.role == "screen"
        if self._presence is not None and connection is not None and screen:
            await self._presence.left(connection.claims.screen_id)

    # -- requests -------------------------------------------------------------------------

    async def on_trigger(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        received = time.perf_counter()
        connection = self._sessions.get(sid)
        if connection is None:
            ack = failure_ack(None, ErrorCode.TOKEN_EXPIRED, "token expired")
        else:
            try:
                ack = await self._desk.submit(connection.claims, payload)
            except Exception:
                logger.exception("trigger failed")
                ack = failure_ack(None, ErrorCode.INTERNAL_ERROR, "internal error")
        success = bool(ack.get("success"))
        outcome = "projected" if success else str(ack.get("code")).lower()
        self._metrics.count_ack(outcome, success=success, seconds=time.perf_counter() - received)
        return ack

    async def on_status(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        connection = self._sessions.get(sid)
        if connection is None:
            return failure_ack(None, ErrorCode.TOKEN_EXPIRED, "token expired")
        try:
            return await self._desk.status(connection.claims, payload)
        except Exception:
            logger.exception("trigger:status failed")
            return failure_ack(None, ErrorCode.INTERNAL_ERROR, "internal error")

    async def on_refresh(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        connection = self._sessions.get(sid)
        token = payload.get("accessToken") if isinstance(payload, dict) else None
        if connection is None:
            return {"success": False, "code": "TOKEN_EXPIRED", "error": "connection expired"}
        try:
            claims = self._tokens.verify_access(token if isinstance(token, str) else None)
            require_same_subject(connection.claims, claims)
        except TokenError as exc:
            return {"success": False, "code": exc.code.value, "error": str(exc)}
        self._sessions.renew(connection, claims)
        return {"success": True, "expiresAt": claims.exp}


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
