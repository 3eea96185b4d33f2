"""The trigger desk: admits triggers and answers them when their projection event arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer
from redis.asyncio import Redis

from observability.tracing import extract, messaging_attributes, trace_fields
from schemas import codec
from schemas.codes import ErrorCode
from schemas.entries import TriggerEntry
from schemas.events import (
    Event,
    TriggerDeadLettered,
    TriggerOutcome,
    TriggerProjected,
    TriggerRejected,
)
from schemas.wire import AckData, StatusRequest, TriggerRequest, failure_ack, success_ack
from services.config.settings import Settings
from services.edge.tokens import AccessClaims
from services.keys import IDEMPOTENCY_TTL_S, LUA_NAMES, PENDING_MARK, ResultField, result_key
from streams.batcher import PipelineBatcher
from streams.fence import ReplicaFence
from streams.keys import Keyspace
from streams.partitions import Partitions
from streams.redis_errors import STORE_ERRORS
from streams.scripts import Script
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)

ADMIT = Script("services.edge", "admit.lua", **LUA_NAMES)
WINDOW_COUNT = Script("services.edge", "window_count.lua")


REQUEST_WINDOW_MS = 300_000
MAX_WAITERS = 100_000
MAX_LATE = 100_000
PENDING_MARK_WAIT_S = 1.0
TRIGGER_ROLES = frozenset({"controller", "admin"})

Result = tuple[str, Event]  # (event id, event)
Ack = dict[str, Any]


def ack_from_event(trigger_id: str, event_id: str, event: Event, *, duplicate: bool) -> Ack:
    """The ack body a trigger's final event stands for."""
    if isinstance(event, TriggerProjected):
        data = AckData(
            event_id=event_id,
            screen_id=event.screen_id,
            order_id=event.order_id,
            display_index=event.display_index,
            window_id=event.window_id,
            document_url=event.document_url,
            projected_at=event.projected_at,
            superseded=event.superseded,
        )
        return success_ack(trigger_id, data, duplicate=duplicate)
    if isinstance(event, TriggerRejected | TriggerDeadLettered):
        return failure_ack(trigger_id, event.code, event.message)
    return failure_ack(trigger_id, ErrorCode.INTERNAL_ERROR, "unexpected event for a trigger")


class TriggerDesk:
    """Admits triggers (one Redis call each) and resolves their acks from `rd:events`."""

    def __init__(
        self,
        *,
        redis: Redis,
        partitions: Partitions,
        settings: Settings,
        edge_id: str,
        batcher: PipelineBatcher,
        clock_ms: Callable[[], int] = now_ms,
        tracer: Tracer | None = None,
        cluster: bool = False,
        fence: ReplicaFence | None = None,
    ) -> None:
        self._cluster = cluster
        self._fence = fence if fence is not None and fence.enabled else None
        self._tracer = tracer or NoOpTracer()
        self._tracing = not isinstance(self._tracer, NoOpTracer)
        self._redis = redis
        self._partitions = partitions
        self._settings = settings
        self._edge_id = edge_id
        self._clock_ms = clock_ms
        self._batcher = batcher
        self._waiters: dict[tuple[str, str], asyncio.Future[Result]] = {}
        self._late: OrderedDict[tuple[str, str], float] = OrderedDict()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def submit(self, claims: AccessClaims, payload: object) -> Ack:
        """Answer one `trigger`: validation, admission, then the ack on projection."""
        if not self._tracing:
            return await self._submit(claims, payload)
        parent = payload.get("traceparent") if isinstance(payload, dict) else None
        state = payload.get("tracestate") if isinstance(payload, dict) else None
        with self._tracer.start_as_current_span(
            "trigger receive",
            context=extract(
                parent if isinstance(parent, str) else None,
                state if isinstance(state, str) else None,
            ),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "socket.io", "rdisplay.user.id": claims.user_id},
        ) as span:
            ack = await self._submit(claims, payload)
            if ack.get("id"):
                span.set_attribute("rdisplay.trigger.id", str(ack["id"]))
            code = "OK" if ack.get("success") else str(ack.get("code"))
            span.set_attribute("rdisplay.ack.code", code)
            if code in (ErrorCode.INTERNAL_ERROR, ErrorCode.DEAD_LETTERED):
                span.set_status(Status(StatusCode.ERROR, str(ack.get("error"))))
            return ack

    async def _submit(self, claims: AccessClaims, payload: object) -> Ack:
        trigger_id = _payload_id(payload)
        if claims.role not in TRIGGER_ROLES:
            return failure_ack(trigger_id, ErrorCode.FORBIDDEN, "role may not trigger")
        try:
            request = msgspec.convert(payload, TriggerRequest)
        except msgspec.ValidationError as exc:
            return failure_ack(trigger_id, ErrorCode.VALIDATION_ERROR, str(exc))
        now = self._clock_ms()
        if abs(now - request.timestamp) > REQUEST_WINDOW_MS:
            return failure_ack(
                request.id, ErrorCode.REQUEST_EXPIRED, "timestamp is more than 300 s from now"
            )
        key = (claims.user_id, request.id)
        future = self._waiters.get(key)
        created = future is None
        if future is None:
            future = asyncio.get_running_loop().create_future()
            if len(self._waiters) < MAX_WAITERS:
                self._waiters[key] = future
        space = self._partitions.for_screen(claims.screen_id)
        try:
            reply = await self._admit_entry(space, claims, request, now)
        except STORE_ERRORS:
            logger.exception("trigger admission failed", extra={"trigger_id": request.id})
            self._forget(key, future, created)
            return failure_ack(request.id, ErrorCode.INTERNAL_ERROR, "event store unavailable")
        kind = as_text(reply[0])
        if kind == "limited":
            self._forget(key, future, created)
            return failure_ack(request.id, ErrorCode.RATE_LIMITED, "too many triggers; slow down")
        duplicate = kind == "dup"
        if duplicate and as_text(reply[2]):
            self._forget(key, future, created)
            return await self._recorded(space, request.id, as_text(reply[3]), True)
        return await self._wait(space, key, future, request.id, duplicate=duplicate)

    async def _admit_entry(
        self, space: Keyspace, claims: AccessClaims, request: TriggerRequest, now: int
    ) -> list[Any]:
        entry = TriggerEntry(
            id=request.id,
            user_id=claims.user_id,
            screen_id=claims.screen_id,
            order_id=request.order_id,
            display_index=request.display_index,
            timestamp=request.timestamp,
            received_at=now,
            edge_id=self._edge_id,
        )
        fields: list[bytes | str] = []
        for name, value in codec.entry_fields(entry).items():
            fields += (name, value)
        producer = None
        if self._tracing:
            producer = self._tracer.start_span(
                f"send {space.triggers}",
                kind=SpanKind.PRODUCER,
                attributes=messaging_attributes(space.triggers, "send"),
            )
            fields += trace_fields(producer)
        elif request.traceparent:
            fields += ("traceparent", request.traceparent)
            if request.tracestate:
                fields += ("tracestate", request.tracestate)
        try:
            reply = await self._append(space, claims, request, fields)
        except BaseException as exc:
            if producer is not None:
                producer.set_status(Status(StatusCode.ERROR, repr(exc)))
                producer.end()
            raise
        if producer is not None:
            producer.set_attribute("messaging.message.id", as_text(reply[1]))
            producer.set_attribute("rdisplay.admission", as_text(reply[0]))
            producer.end()
        return reply

    async def _append(
        self,
        space: Keyspace,
        claims: AccessClaims,
        request: TriggerRequest,
        fields: list[bytes | str],
    ) -> list[Any]:
        settings = self._settings
        rate = self._partitions.root.compound("rate", claims.user_id)
        rkey = result_key(space, claims.user_id, request.id)
        keys = [rate, rkey, space.triggers]
        if self._cluster:
            # The user's counter and the partition are in different slots: count first. A
            # repeat then costs a unit of the rate too, and one over the limit is still
            # answered as the repeat it is (the check below writes nothing).
            count = int(
                await self._batcher.evalsha(WINDOW_COUNT, [rate], [settings.rate_limit_window_ms])
            )
            if count > settings.rate_limit_max_requests:
                recorded = await self._batcher.execute("HEXISTS", rkey, ResultField.ENTRY)
                if not recorded:
                    retry_after = await self._batcher.execute("PTTL", rate)
                    return [b"limited", retry_after]
            keys = [rkey, space.triggers]
        reply: list[Any] = await self._batcher.evalsha(
            ADMIT,
            keys,
            [
                settings.rate_limit_window_ms,
                settings.rate_limit_max_requests,
                IDEMPOTENCY_TTL_S,
                settings.stream_maxlen,
                *fields,
            ],
        )
        return reply

    async def _wait(
        self,
        space: Keyspace,
        key: tuple[str, str],
        future: asyncio.Future[Result],
        trigger_id: str,
        *,
        duplicate: bool,
    ) -> Ack:
        if not future.done():
            # asyncio.wait does not cancel the shared future (repeats wait on it too) and costs
            # less per trigger than wait_for + shield.
            await asyncio.wait((future,), timeout=self._settings.ack_timeout_ms / 1000)
        if future.done():
            event_id, event = future.result()
        else:
            if self._waiters.get(key) is future:
                del self._waiters[key]
            self._remember_late(key)
            await self._mark_pending(space, key)
            return failure_ack(
                trigger_id,
                ErrorCode.PENDING,
                "no projection yet; the result follows as trigger:result",
            )
        return ack_from_event(trigger_id, event_id, event, duplicate=duplicate)

    async def _mark_pending(self, space: Keyspace, key: tuple[str, str]) -> None:
        """Tell the worker this trigger was answered PENDING: its final event will say so,
        and every edge (not only this one) sends `trigger:result` to the user's sockets."""
        rkey = result_key(space, *key)
        # One pipeline; NX: the record keeps its admission TTL (gets one if it had none).
        # Bounded, so an unreachable Redis delays the PENDING answer by at most a second.
        marks = asyncio.gather(
            self._batcher.execute("HSET", rkey, PENDING_MARK, "1"),
            self._batcher.execute("EXPIRE", rkey, IDEMPOTENCY_TTL_S, "NX"),
            return_exceptions=True,
        )
        try:
            results: Sequence[object] = await asyncio.wait_for(marks, PENDING_MARK_WAIT_S)
        except TimeoutError:
            results = [TimeoutError("no reply in time")]
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        if errors:  # this edge still answers its own sockets from memory
            logger.warning("could not mark a pending trigger", extra={"error": errors[0]})

    async def _recorded(
        self, space: Keyspace, trigger_id: str, event_id: str, duplicate: bool
    ) -> Ack:
        event = await self._fetch_event(space, event_id)
        if event is None:
            return failure_ack(trigger_id, ErrorCode.INTERNAL_ERROR, "recorded result was trimmed")
        if self._fence is not None and not await self._fence.hold(space, (space.events, event_id)):
            # Read from a master that died before replicating it: the result is gone, and a
            # re-send is admitted anew.
            return failure_ack(trigger_id, ErrorCode.INTERNAL_ERROR, "store failed over; re-send")
        return ack_from_event(trigger_id, event_id, event, duplicate=duplicate)

    async def _fetch_event(self, space: Keyspace, event_id: str) -> Event | None:
        if not event_id:
            return None
        entries: Any = await self._redis.xrange(space.events, event_id, event_id)
        if not entries:
            return None
        fields: dict[bytes, bytes] = entries[0][1]
        return codec.decode_event(fields)

    async def status(self, claims: AccessClaims, payload: object) -> Ack:
        trigger_id = _payload_id(payload)
        try:
            request = msgspec.convert(payload, StatusRequest)
        except msgspec.ValidationError as exc:
            return failure_ack(trigger_id, ErrorCode.VALIDATION_ERROR, str(exc))
        space = self._partitions.for_screen(claims.screen_id)
        record = await self._redis.hmget(
            result_key(space, claims.user_id, request.id),
            [ResultField.ENTRY, ResultField.OUTCOME, ResultField.EVENT_ID],
        )
        entry, outcome, event_id = (as_text(v) if v is not None else "" for v in record)
        if outcome:
            return await self._recorded(space, request.id, event_id, False)
        if entry:
            return failure_ack(request.id, ErrorCode.PENDING, "the trigger is being processed")
        return failure_ack(request.id, ErrorCode.UNKNOWN_TRIGGER, "no trigger with this id")

    def expects(self, user_id: str, trigger_id: str) -> bool:
        """Whether a client of this edge waits for this trigger's result."""
        key = (user_id, trigger_id)
        return key in self._waiters or key in self._late

    def on_event(self, event_id: str, event: Event) -> tuple[str, Ack] | None:
        """Resolve the waiters of a trigger's final event.

        Returns (user id, ack) when the trigger was answered PENDING on this edge, so the
        caller sends the result as `trigger:result`.
        """
        if not isinstance(event, TriggerOutcome):
            return None
        key = (event.user_id, event.trigger_id)
        future = self._waiters.pop(key, None)
        if future is not None and not future.done():
            future.set_result((event_id, event))
        if self._late.pop(key, None) is not None:
            return self.result_of(event_id, event)
        return None

    def result_of(self, event_id: str, event: Event) -> tuple[str, Ack] | None:
        """(user id, ack) of a trigger's final event, for `trigger:result`."""
        if not isinstance(event, TriggerOutcome):
            return None
        return event.user_id, ack_from_event(event.trigger_id, event_id, event, duplicate=False)

    def _forget(self, key: tuple[str, str], future: asyncio.Future[Result], created: bool) -> None:
        if created and self._waiters.get(key) is future:
            del self._waiters[key]

    def _remember_late(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        self._late[key] = now + IDEMPOTENCY_TTL_S
        self._late.move_to_end(key)
        while self._late and (len(self._late) > MAX_LATE or next(iter(self._late.values())) < now):
            self._late.popitem(last=False)


def _payload_id(payload: object) -> str | None:
    if isinstance(payload, dict):
        value = payload.get("id")
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None
