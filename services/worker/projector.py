"""The `projector` group's batch handler: resolve orders, decide events, commit atomically."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.trace import NoOpTracer, Tracer
from redis.asyncio import Redis

from observability.metrics import Metrics
from schemas import codec
from schemas.codes import ErrorCode
from schemas.entries import DisplayAckEntry, TriggerEntry
from schemas.errors import InvalidEntryError, PoisonEntryError
from schemas.events import (
    DisplayAcknowledged,
    TriggerDeadLettered,
    TriggerProjected,
    TriggerRejected,
)
from services.keys import result_key, screen_key, window_id
from services.worker.commit import (
    ACKNOWLEDGED,
    DEAD_LETTERED,
    PROJECTED,
    REJECTED,
    Op,
    commit,
    cut_before_dead_letter_id,
)
from services.worker.orders import OrderLookupError, OrderNotFoundError, OrderResolver
from services.worker.spans import BatchSpans, passthrough_fields
from streams.consumer import BatchResult, DeadLetter, Delivery, Failure
from streams.dead_letter import REDRIVE_FIELD, dead_letter_fields
from streams.keys import Keyspace
from streams.values import now_ms

logger = logging.getLogger(__name__)


class Projector:
    """Turns `rd:triggers` entries into events, results and screen projections."""

    def __init__(
        self,
        *,
        redis: Redis,
        keyspace: Keyspace,
        resolver: OrderResolver,
        group: str,
        maxlen: int,
        clock_ms: Callable[[], int] = now_ms,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._keyspace = keyspace
        self._metrics = metrics
        self._spans = BatchSpans(
            tracer or NoOpTracer(), stream=keyspace.triggers, events=keyspace.events, group=group
        )
        self._resolver = resolver
        self._group = group
        self._maxlen = maxlen
        self._clock_ms = clock_ms
        self._redis = redis
        self.last_statuses: list[str] = []

    def _event_extra(self, delivery: Delivery, kind: str) -> tuple[bytes, ...]:
        """Stream fields beside `data` for the event: trace context, and the redrive marker
        so edges send the new result of a redriven trigger as `trigger:result`."""
        return self._spans.event_fields(delivery, kind) + _redrive_marker(delivery)

    def paused(self) -> bool:
        return self._resolver.paused()

    async def wait_ready(self) -> None:
        await self._resolver.wait_ready()

    async def process(self, batch: Sequence[Delivery]) -> BatchResult[Op]:
        self._spans.start(batch)
        if self._metrics is not None:
            redelivered = sum(1 for d in batch if d.deliveries > 1)
            if redelivered:
                self._metrics.redeliveries.inc(redelivered)
        result = await self._decide(batch)
        for failure in result.failures:
            self._spans.fail(failure.delivery.id, failure.error)
        return result

    async def _decide(self, batch: Sequence[Delivery]) -> BatchResult[Op]:
        result: BatchResult[Op] = BatchResult()
        triggers: list[tuple[Delivery, TriggerEntry]] = []
        for delivery in batch:
            try:
                entry = codec.decode_entry(delivery.fields)
            except InvalidEntryError as exc:
                if delivery.fields.get(b"type") == b"trigger":
                    result.commits.append(self._invalid_trigger(delivery, exc))
                else:
                    result.failures.append(Failure(delivery, str(exc), poison=True))
                continue
            except PoisonEntryError as exc:
                result.failures.append(Failure(delivery, str(exc), poison=True))
                continue
            if isinstance(entry, TriggerEntry):
                triggers.append((delivery, entry))
            elif isinstance(entry, DisplayAckEntry):
                result.commits.append(self._display_ack(delivery, entry))

        if triggers:
            await self._resolve_triggers(triggers, result)
        return result

    async def _resolve_triggers(
        self, triggers: list[tuple[Delivery, TriggerEntry]], result: BatchResult[Op]
    ) -> None:
        first: dict[str, str] = {}
        for delivery, entry in triggers:
            first.setdefault(entry.order_id, delivery.id)
        order_ids = list(first)
        # Each lookup runs in the span of the first entry that asked for its order.
        outcomes = await asyncio.gather(
            *(self._spans.in_span(first[o], self._resolver.resolve(o)) for o in order_ids),
            return_exceptions=True,
        )
        resolved = dict(zip(order_ids, outcomes, strict=True))
        now = self._clock_ms()
        for delivery, entry in triggers:
            outcome = resolved[entry.order_id]
            if isinstance(outcome, str):
                result.commits.append(self._projected(delivery, entry, outcome, now))
            elif isinstance(outcome, OrderNotFoundError):
                who = _Identity.from_entry(entry)
                code = ErrorCode.ORDER_NOT_FOUND
                result.commits.append(self._rejected(delivery, who, code, str(outcome), now))
            elif isinstance(outcome, OrderLookupError):
                result.failures.append(Failure(delivery, str(outcome)))
            else:
                logger.error(
                    "order resolver failed unexpectedly",
                    exc_info=outcome,
                    extra={"entry_id": delivery.id, "order_id": entry.order_id},
                )
                result.failures.append(Failure(delivery, f"order resolver error: {outcome!r}"))

    def _projected(
        self, delivery: Delivery, entry: TriggerEntry, document_url: str, now: int
    ) -> Op:
        event = TriggerProjected(
            trigger_id=entry.id,
            user_id=entry.user_id,
            screen_id=entry.screen_id,
            order_id=entry.order_id,
            display_index=entry.display_index,
            window_id=window_id(entry.screen_id, entry.display_index),
            document_url=document_url,
            trigger_entry_id=delivery.id,
            timestamp=entry.timestamp,
            received_at=entry.received_at,
            projected_at=now,
            deliveries=delivery.deliveries,
            superseded=False,
        )
        # Both forms: the script knows which one holds once it sees the screen's projection.
        superseded = msgspec.structs.replace(event, superseded=True)
        return Op(
            kind=PROJECTED,
            entry_id=delivery.id,
            data=codec.encode(event),
            args=(codec.encode(superseded),),
            extra=self._event_extra(delivery, PROJECTED),
            result_key=result_key(self._keyspace, entry.user_id, entry.id),
            screen_key=screen_key(self._keyspace, entry.screen_id),
        )

    def _rejected(
        self, delivery: Delivery, who: _Identity, code: ErrorCode, message: str, now: int
    ) -> Op:
        event = TriggerRejected(
            **who.event_fields(),
            trigger_entry_id=delivery.id,
            rejected_at=now,
            deliveries=delivery.deliveries,
            code=code,
            message=message,
        )
        return Op(
            kind=REJECTED,
            entry_id=delivery.id,
            data=codec.encode(event),
            extra=self._event_extra(delivery, REJECTED),
            result_key=who.result_key(self._keyspace),
        )

    def _invalid_trigger(self, delivery: Delivery, exc: InvalidEntryError) -> Op:
        who = _Identity.from_raw(exc.raw)
        return self._rejected(delivery, who, ErrorCode.VALIDATION_ERROR, str(exc), self._clock_ms())

    def _display_ack(self, delivery: Delivery, entry: DisplayAckEntry) -> Op:
        event = DisplayAcknowledged(
            trigger_id=entry.trigger_id,
            event_id=entry.event_id,
            screen_id=entry.screen_id,
            status=entry.status,
            acked_at=entry.acked_at,
            display_ack_entry_id=delivery.id,
            acknowledged_at=self._clock_ms(),
            error=entry.error,
        )
        return Op(
            kind=ACKNOWLEDGED,
            entry_id=delivery.id,
            data=codec.encode(event),
            extra=self._event_extra(delivery, ACKNOWLEDGED),
            args=(
                entry.event_id.encode(),
                entry.status.encode(),
                str(entry.acked_at).encode(),
                (entry.error or "").encode(),
            ),
            screen_key=screen_key(self._keyspace, entry.screen_id),
        )

    def _dead_lettered(self, item: DeadLetter, now: int) -> Op:
        delivery = item.delivery
        fields = dead_letter_fields(
            delivery.fields,
            source_id=delivery.id,
            reason=item.reason,
            error=item.error,
            deliveries=delivery.deliveries,
            failed_at=now,
        )
        identity = _Identity.from_fields(delivery.fields)
        data = b""
        rkey = ""
        if identity is not None:
            event = TriggerDeadLettered(
                **identity.event_fields(),
                trigger_entry_id=delivery.id,
                failed_at=now,
                deliveries=delivery.deliveries,
                code=ErrorCode.DEAD_LETTERED,
                message=item.error,
            )
            data = cut_before_dead_letter_id(codec.encode(event))
            rkey = identity.result_key(self._keyspace)
        return Op(
            kind=DEAD_LETTERED,
            entry_id=delivery.id,
            data=data,
            extra=passthrough_fields(delivery) + _redrive_marker(delivery),
            args=tuple(fields),
            result_key=rkey,
        )

    async def commit(self, commits: Sequence[Op], dead: Sequence[DeadLetter]) -> None:
        now = self._clock_ms()
        ops = [*commits, *(self._dead_lettered(item, now) for item in dead)]
        for item in dead:
            self._spans.dead_lettered(item.delivery, item.reason.value, item.error)
        try:
            done = await commit(
                self._redis, self._keyspace, group=self._group, maxlen=self._maxlen, ops=ops
            )
        except BaseException as exc:
            self._spans.abort(f"commit failed: {exc!r}")
            raise
        self.last_statuses = done.statuses
        self._spans.finish([op.entry_id for op in ops], done.statuses, done.event_ids)
        for op, status in zip(ops, done.statuses, strict=True):
            if status != "written":
                logger.info(
                    "entry already committed; no second effect",
                    extra={"entry_id": op.entry_id, "status": status, "kind": op.kind},
                )


@dataclass(frozen=True, slots=True)
class _Identity:
    """What can be read of a trigger that failed its schema, for its event and result."""

    trigger_id: str
    user_id: str
    screen_id: str
    order_id: str
    display_index: int
    timestamp: int
    received_at: int

    @classmethod
    def from_entry(cls, entry: TriggerEntry) -> _Identity:
        return cls(
            trigger_id=entry.id,
            user_id=entry.user_id,
            screen_id=entry.screen_id,
            order_id=entry.order_id,
            display_index=entry.display_index,
            timestamp=entry.timestamp,
            received_at=entry.received_at,
        )

    def event_fields(self) -> dict[str, Any]:
        """The identity fields every trigger outcome event repeats."""
        return {
            "trigger_id": self.trigger_id,
            "user_id": self.user_id,
            "screen_id": self.screen_id,
            "order_id": self.order_id,
            "display_index": self.display_index,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
        }

    @classmethod
    def from_raw(cls, raw: dict[str, object]) -> _Identity:
        def text(name: str) -> str:
            value = raw.get(name)
            return value if isinstance(value, str) else ""

        def number(name: str) -> int:
            value = raw.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            trigger_id=text("id"),
            user_id=text("userId"),
            screen_id=text("screenId"),
            order_id=text("orderId"),
            display_index=number("displayIndex"),
            timestamp=number("timestamp"),
            received_at=number("receivedAt"),
        )

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> _Identity | None:
        """The identity of a `trigger` entry, if it has one (poison may not)."""
        if fields.get(b"type") != b"trigger":
            return None
        try:
            raw = codec.decode_json(fields.get(b"data", b""))
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        identity = cls.from_raw(raw)
        return identity if identity.trigger_id and identity.user_id else None

    def result_key(self, keyspace: Keyspace) -> str:
        if not (self.trigger_id and self.user_id):
            return ""
        return result_key(keyspace, self.user_id, self.trigger_id)


def _redrive_marker(delivery: Delivery) -> tuple[bytes, ...]:
    source = delivery.fields.get(REDRIVE_FIELD.encode())
    return (REDRIVE_FIELD.encode(), source) if source is not None else ()
