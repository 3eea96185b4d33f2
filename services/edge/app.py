"""The edge: Starlette HTTP API and Socket.IO on one ASGI app, built by `create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets as random_secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import socketio
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from observability.logging import library_logger
from observability.metrics import CONTENT_TYPE, Metrics
from observability.tracing import Telemetry, disabled, extract_fields, messaging_attributes
from schemas import codec, wire_json
from schemas.codes import ErrorCode
from schemas.errors import PoisonEntryError
from schemas.events import Event, TriggerDeadLettered, TriggerProjected, TriggerRejected
from schemas.wire import failure_ack
from services.config.jwt_keys import resolve_secrets
from services.config.settings import Settings
from services.edge.desk import TriggerDesk
from services.edge.displays import DisplayDispatcher, display_of, screen_room
from services.edge.emit import emit_to
from services.edge.guard import EngineIOGuard
from services.edge.tokens import (
    AccessClaims,
    TokenError,
    TokenService,
    make_refresh_route,
    require_same_subject,
)
from services.keys import PENDING_FIELD, PROJECTOR_GROUP, screen_key
from streams.batcher import BatchedScript, PipelineBatcher
from streams.connections import redis_client
from streams.dead_letter import REDRIVE_FIELD
from streams.ids import is_newer
from streams.keys import Keyspace
from streams.scripts import script_source
from streams.store import StreamStore
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)

MAX_PACKET_BYTES = 64 * 1024
EXPIRY_WARNING_S = 60
SHUTDOWN_WAIT_S = 2.0
# Entry fields that make an event's result go to the user's sockets on every edge.
_ANNOUNCE_FIELDS = (REDRIVE_FIELD.encode(), PENDING_FIELD.encode())
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "message"})


@dataclass(slots=True)
class Connection:
    claims: AccessClaims
    warned: bool = False


class _ClientFaults(logging.Filter):
    """engine.io logs a bad request (an old protocol version, an unknown session id, a bad
    transport) as an ERROR without a traceback. It is the client's fault, not the server's:
    a WARNING, so that alerts on errors mean something. Its real errors carry a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and not record.exc_info:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _client_faults_as_warnings(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, _ClientFaults) for f in logger.filters):
        logger.addFilter(_ClientFaults())
    return logger


class EdgeServer(socketio.AsyncServer):  # type: ignore[misc]  # python-socketio is untyped
    """Drops client events named like reserved ones (`connect`, `disconnect`): they would
    otherwise reach the connect/disconnect handlers with forged arguments."""

    async def _handle_event(self, eio_sid: str, namespace: str, id: Any, data: Any) -> None:
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            return
        if data[0] in RESERVED_EVENTS:
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Refuse what our protocol never uses and what the library cannot parse.

        Binary packets (types 5 and 6, and their attachments) are not part of the protocol;
        the library keeps a half-assembled one per connection forever when its attachments
        are malformed. A malformed packet otherwise becomes an ERROR with a traceback.
        Either way only that connection is closed, with one structured warning.
        """
        binary = isinstance(data, bytes) or (isinstance(data, str) and data[:1] in ("5", "6"))
        if not binary:
            try:
                await super()._handle_eio_message(eio_sid, data)
                return
            except Exception as exc:  # the library's parse errors have no common type
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            problem = "binary packets are not part of the protocol"
        self._binary_packet.pop(eio_sid, None)
        logger.warning(
            "malformed socket.io packet; closing the connection", extra={"error": problem}
        )
        await self.close_transport(eio_sid)

    async def close_transport(self, eio_sid: str) -> None:
        """Disconnect a client and close its transport now.

        engine.io's disconnect only queues a CLOSE packet and trusts the client to hang up;
        a hostile one would keep the WebSocket open until the ping timeout (45 s). The `None`
        in its send queue is engine.io's own signal for its writer to close the socket.
        """
        socket_ = self.eio.sockets.pop(eio_sid, None)
        if socket_ is None:
            return
        # wait=False: waiting for the send queue to drain would hang a long-polling client's
        # request until its next GET, which a closed session never gets.
        await socket_.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)
        socket_.queue.put_nowait(None)


class Edge:
    """Everything one edge process owns; `create_app` builds it, the lifespan runs it."""

    def __init__(
        self,
        settings: Settings,
        *,
        telemetry: Telemetry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry or disabled()
        self.metrics = metrics or Metrics()
        self.started = time.monotonic()
        self.edge_id = f"{socket.gethostname()}-{os.getpid()}-{random_secrets.token_hex(3)}"
        self.keyspace = Keyspace(settings.stream_prefix)
        self.sio = EdgeServer(
            async_mode="asgi",
            json=wire_json,
            cors_allowed_origins="*",  # Origin is checked at connect, with a clear refusal
            max_http_buffer_size=MAX_PACKET_BYTES,
            logger=library_logger("socketio.server"),
            engineio_logger=_client_faults_as_warnings(library_logger("engineio.server")),
        )
        self.connections: dict[str, Connection] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._register_handlers()

    # -- lifespan -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        url = self.settings.redis_url
        if url is None:
            msg = "the edge needs REDIS_URL"
            raise RuntimeError(msg)
        self.redis = redis_client(url)
        self.reader_redis = redis_client(url, blocking=True)
        self.tokens = TokenService(
            secrets=resolve_secrets(self.settings), redis=self.redis, keyspace=self.keyspace
        )
        self.batcher = PipelineBatcher(self.redis)
        self._connect_rate = BatchedScript(script_source("services.edge", "connect_rate.lua"))
        self.desk = TriggerDesk(
            redis=self.redis,
            keyspace=self.keyspace,
            settings=self.settings,
            edge_id=self.edge_id,
            batcher=self.batcher,
            tracer=self.telemetry.tracer,
        )
        self.store = StreamStore(
            redis=self.redis, maxlen=self.settings.stream_maxlen, batcher=self.batcher
        )
        self.displays = DisplayDispatcher(
            sio=self.sio,
            store=self.store,
            triggers_stream=self.keyspace.triggers,
            tracer=self.telemetry.tracer,
        )
        self.refresh_route = make_refresh_route(self.tokens)
        start = await self._last_event_id()
        self._tasks = [
            asyncio.create_task(self._read_events(start), name="edge-events"),
            asyncio.create_task(self.displays.run_resends(self._stop), name="edge-resends"),
            asyncio.create_task(self._watch_expiry(), name="edge-expiry"),
        ]
        logger.info("edge started", extra={"edge_id": self.edge_id})
        try:
            yield
        finally:
            self._stop.set()
            for task in self._tasks:
                task.cancel()
            # Bounded: SIGTERM must end the process within 10 s. A task cancelled inside a
            # redis-py read has been seen to stay "cancelling" (once in ~20 test runs);
            # closing the clients below breaks its read, and it is not waited for again.
            stuck: set[asyncio.Task[None]] = set()
            if self._tasks:
                _done, stuck = await asyncio.wait(self._tasks, timeout=SHUTDOWN_WAIT_S)
            if stuck:
                logger.warning(
                    "edge tasks did not stop in time",
                    extra={"tasks": sorted(task.get_name() for task in stuck)},
                )
            for client in (self.reader_redis, self.redis):
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(client.aclose(), SHUTDOWN_WAIT_S)
            logger.info("edge stopped", extra={"edge_id": self.edge_id})

    async def _last_event_id(self) -> str:
        for _ in range(50):
            try:
                last: Any = await self.redis.xrevrange(self.keyspace.events, count=1)
                return as_text(last[0][0]) if last else "0-0"
            except (RedisError, OSError):
                await asyncio.sleep(0.2)
        msg = "the event store is unreachable"
        raise RuntimeError(msg)

    # -- events from the workers ----------------------------------------------------------

    async def _read_events(self, last_id: str) -> None:
        failures = 0
        while True:
            try:
                reply: Any = await self.reader_redis.xread(
                    {self.keyspace.events: last_id}, count=512, block=1000
                )
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                logger.warning("event reader: redis unavailable", extra={"error": str(exc)})
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            for _stream, entries in reply or ():
                for raw_id, fields in entries:
                    last_id = raw_id.decode()
                    await self._on_event(last_id, fields)

    async def _on_event(self, event_id: str, fields: dict[bytes, bytes]) -> None:
        if not fields.get(b"type", b"").startswith(b"trigger."):
            return
        try:
            event = codec.decode_event(fields)
        except PoisonEntryError:
            logger.warning("undecodable event skipped", extra={"event_id": event_id})
            return
        if isinstance(event, TriggerDeadLettered):
            self.metrics.dead_letter.inc()
        # A redriven dead letter, or a trigger some edge answered PENDING: its result goes to
        # the user's sockets on every edge (the controller may have moved).
        announce = any(name in fields for name in _ANNOUNCE_FIELDS)
        if not self.telemetry.enabled:
            await self._deliver(event_id, event, announce=announce)
            return
        if not isinstance(event, TriggerProjected | TriggerRejected | TriggerDeadLettered):
            return
        shows = isinstance(event, TriggerProjected) and self.displays.has_screen(event.screen_id)
        if not (shows or announce or self.desk.expects(event.user_id, event.trigger_id)):
            await self._deliver(event_id, event)
            return  # nothing on this edge is waiting for it: no span
        with self.telemetry.tracer.start_as_current_span(
            f"receive {self.keyspace.events}",
            context=extract_fields(fields),
            kind=SpanKind.CONSUMER,
            attributes=messaging_attributes(self.keyspace.events, "receive", message_id=event_id),
        ):
            await self._deliver(event_id, event, announce=announce)

    async def _deliver(self, event_id: str, event: Event, *, announce: bool = False) -> None:
        late = self.desk.on_event(event_id, event)
        if late is None and announce:  # redriven, or answered PENDING on some edge
            late = self.desk.result_of(event_id, event)
        if late is not None:
            user_id, ack = late
            # Late results come in floods when the edge is behind: no loop turn per result.
            room = f"user:{user_id}"
            for sid, _eio_sid in list(self.sio.manager.get_participants("/", room)):
                await emit_to(self.sio, sid, "trigger:result", ack)
        if isinstance(event, TriggerProjected) and not event.superseded:
            await self.displays.dispatch(event_id, event)

    # -- token lifetime -------------------------------------------------------------------

    async def _watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for sid, conn in list(self.connections.items()):
                exp = conn.claims.exp
                if now >= exp:
                    self._forget(sid)
                    with contextlib.suppress(Exception):
                        await self.sio.emit(
                            "auth:expired", {"code": ErrorCode.TOKEN_EXPIRED.value}, to=sid
                        )
                        await self.sio.disconnect(sid)
                elif not conn.warned and now >= exp - EXPIRY_WARNING_S:
                    conn.warned = True
                    # Many sockets can enter the window at once: no loop turn per socket.
                    with contextlib.suppress(Exception):
                        await emit_to(self.sio, sid, "auth:expiring", {"expiresAt": exp})

    # -- Socket.IO ------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("trigger", self.on_trigger)
        sio.on("trigger:status", self.on_status)
        sio.on("auth:refresh", self.on_refresh)

    def _origin_allowed(self, environ: dict[str, Any]) -> bool:
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return True  # native clients send none
        allowed = self.settings.allowed_origins
        return "*" in allowed or origin.rstrip("/") in allowed

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
            claims = self.tokens.verify_access(token if isinstance(token, str) else None)
        except TokenError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.code.value) from None
        if not await self._may_connect(claims):
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.RATE_LIMITED.value)
        self.connections[sid] = Connection(claims, warned=False)
        self.metrics.connections.labels(claims.role).inc()
        if claims.role == "screen":
            await self.sio.enter_room(sid, screen_room(claims.screen_id))
            last = auth.get("lastEventId") if isinstance(auth, dict) else None
            await self._recover_screen(
                sid, claims.screen_id, last if isinstance(last, str) else None
            )
        else:
            await self.sio.enter_room(sid, f"user:{claims.user_id}")
        if time.time() >= claims.exp - EXPIRY_WARNING_S:
            self.connections[sid].warned = True
            await self.sio.emit("auth:expiring", {"expiresAt": claims.exp}, to=sid)

    async def _may_connect(self, claims: AccessClaims) -> bool:
        """At most RATE_LIMIT_MAX_REQUESTS connections per RATE_LIMIT_WINDOW for one token
        identity (user, screen, role), counted on every edge: a device in a reconnect loop is
        refused with RATE_LIMITED. Per identity, not per user: the screens of a shop that
        share one userId all reconnect at once after an edge restart, and must get in."""
        key = self.keyspace.compound("connects", claims.user_id, claims.screen_id, claims.role)
        try:
            count = await self.batcher.evalsha(
                self._connect_rate, [key], [self.settings.rate_limit_window_ms]
            )
        except RedisError as exc:  # fail open: without Redis the edge cannot limit anything
            logger.warning("connection rate not counted", extra={"error": str(exc)})
            return True
        return int(count) <= self.settings.rate_limit_max_requests

    async def _recover_screen(self, sid: str, screen_id: str, last_event_id: str | None) -> None:
        projection = await self.redis.hgetall(screen_key(self.keyspace, screen_id))
        if not projection:
            return
        event_id = as_text(projection[b"eventId"])
        if last_event_id is not None:
            try:
                if not is_newer(event_id, last_event_id):
                    return
            except ValueError:
                pass  # an unparsable lastEventId counts as none
        data = projection[b"data"]
        fields = {b"type": b"trigger.projected", b"v": b"1", b"data": _bytes(data)}
        event = codec.decode_event(fields)
        if isinstance(event, TriggerProjected):
            payload = display_of(event_id, event, now_ms())

            await self.displays.send(sid, screen_id, msgspec.to_builtins(payload))

    async def on_disconnect(self, sid: str, _reason: Any = None) -> None:
        self._forget(sid)
        self.displays.forget_socket(sid)

    def _forget(self, sid: str) -> None:
        conn = self.connections.pop(sid, None)
        if conn is not None:
            self.metrics.connections.labels(conn.claims.role).dec()

    async def on_trigger(self, sid: str, payload: Any = None, *_extra: Any) -> dict[str, Any]:
        received = time.perf_counter()
        conn = self.connections.get(sid)
        if conn is None:
            ack = failure_ack(None, ErrorCode.TOKEN_EXPIRED, "token expired")
        else:
            try:
                ack = await self.desk.submit(conn.claims, payload)
            except Exception:
                logger.exception("trigger failed")
                ack = failure_ack(None, ErrorCode.INTERNAL_ERROR, "internal error")
        success = bool(ack.get("success"))
        outcome = "projected" if success else str(ack.get("code")).lower()
        self.metrics.count_ack(outcome, success=success, seconds=time.perf_counter() - received)
        return ack

    async def on_status(self, sid: str, payload: Any = None, *_extra: Any) -> dict[str, Any]:
        conn = self.connections.get(sid)
        if conn is None:
            return failure_ack(None, ErrorCode.TOKEN_EXPIRED, "token expired")
        try:
            return await self.desk.status(conn.claims, payload)
        except Exception:
            logger.exception("trigger:status failed")
            return failure_ack(None, ErrorCode.INTERNAL_ERROR, "internal error")

    async def on_refresh(self, sid: str, payload: Any = None, *_extra: Any) -> dict[str, Any]:
        conn = self.connections.get(sid)
        token = payload.get("accessToken") if isinstance(payload, dict) else None
        if conn is None:
            return {"success": False, "code": "TOKEN_EXPIRED", "error": "connection expired"}
        try:
            claims = self.tokens.verify_access(token if isinstance(token, str) else None)
            require_same_subject(conn.claims, claims)
        except TokenError as exc:
            return {"success": False, "code": exc.code.value, "error": str(exc)}
        conn.claims = claims
        conn.warned = False
        return {"success": True, "expiresAt": claims.exp}

    # -- HTTP -----------------------------------------------------------------------------

    async def health(self, _request: Request) -> JSONResponse:
        acks = self.metrics.acks
        body: dict[str, Any] = {
            "status": "ok",
            "timestamp": now_ms(),
            "uptime": round(time.monotonic() - self.started, 3),
            "memory": _memory(),
            "connections": len(self.connections),
            "redis": "ok",
            "streams": {"lag": None, "pending": None, "deadLetter": None},
            "metrics": {
                "totalRequests": acks.total,
                "successCount": acks.success,
                "failureCount": acks.failure,
                "successRate": round(acks.success / acks.total, 4) if acks.total else 1.0,
                "errorBreakdown": dict(acks.errors),
            },
        }
        try:
            streams = await self._stream_state()
        except (RedisError, OSError, TimeoutError):
            body["status"] = "unavailable"
            body["redis"] = "unavailable"
            return JSONResponse(body, status_code=503)
        body["streams"] = streams
        return JSONResponse(body)

    async def _stream_state(self) -> dict[str, int | None]:
        """Lag, pending and dead-letter length, read once for /health and /metrics (≤ 0.8 s)."""
        async with asyncio.timeout(0.8), self.redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_groups(self.keyspace.triggers)
            pipe.xlen(self.keyspace.dead_letter)
            groups, dead = await pipe.execute(raise_on_error=False)
        state: dict[str, int | None] = {"lag": None, "pending": None, "deadLetter": None}
        if isinstance(groups, list):
            for group in groups:
                if as_text(group["name"]) == PROJECTOR_GROUP:
                    state["lag"] = group.get("lag")
                    state["pending"] = group.get("pending")
        state["deadLetter"] = dead if isinstance(dead, int) else 0
        labels = (self.keyspace.triggers, PROJECTOR_GROUP)
        for gauge, value in (
            (self.metrics.stream_lag, state["lag"]),
            (self.metrics.stream_pending, state["pending"]),
        ):
            if value is not None:
                gauge.labels(*labels).set(value)
        return state

    async def prometheus(self, _request: Request) -> Response:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._stream_state()
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _memory() -> dict[str, int]:
    try:
        with open("/proc/self/statm") as statm:
            pages = [int(x) for x in statm.read().split()[:2]]
    except OSError:
        return {}
    page = os.sysconf("SC_PAGE_SIZE")
    return {"rss": pages[1] * page, "vms": pages[0] * page}


def create_app(
    settings: Settings, *, telemetry: Telemetry | None = None, metrics: Metrics | None = None
) -> ASGIApp:
    """The edge's ASGI app: Socket.IO (at /socket.io) and the HTTP API on one port."""
    edge = Edge(settings, telemetry=telemetry, metrics=metrics)

    async def refresh(request: Request) -> Any:
        return await edge.refresh_route.endpoint(request)

    http = Starlette(
        routes=[
            Route("/health", edge.health, methods=["GET"]),
            Route("/metrics", edge.prometheus, methods=["GET"]),
            Route("/api/auth/refresh", refresh, methods=["POST"]),
        ],
        lifespan=edge.lifespan,
    )
    app: ASGIApp = EngineIOGuard(
        socketio.ASGIApp(edge.sio, other_asgi_app=http), max_bytes=MAX_PACKET_BYTES
    )
    app.edge = edge  # type: ignore[attr-defined]  # tests and `serve` reach the edge here
    return app
