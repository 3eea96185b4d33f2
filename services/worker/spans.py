"""The worker's spans for one batch: a CONSUMER span per entry (parent: the entry's
`traceparent`), a PRODUCER span per trigger outcome it writes (its context goes into the
event's `traceparent`; a display.acknowledged carries the entry span's), ended when the
batch's commit returns. No span without an entry."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

from observability.tracing import extract_fields, messaging_attributes, trace_fields
from schemas.events import EVENT_TYPES, TriggerOutcome
from streams.consumer import Delivery

T = TypeVar("T")
TRACE_FIELDS = (b"traceparent", b"tracestate")
TRIGGER_OUTCOMES = frozenset(
    kind for kind, struct in EVENT_TYPES.items() if issubclass(struct, TriggerOutcome)
)


def passthrough_fields(delivery: Delivery) -> tuple[bytes, ...]:
    """Without tracing, an event still carries its entry's context onwards."""
    out: list[bytes] = []
    for name in TRACE_FIELDS:
        value = delivery.fields.get(name)
        if value is not None:
            out += (name, value)
    return tuple(out)


class BatchSpans:
    def __init__(self, tracer: Tracer, *, stream: str, events: str, group: str) -> None:
        self._tracer = tracer
        self.enabled = not isinstance(tracer, NoOpTracer)
        self._stream = stream
        self._events = events
        self._group = group
        self._consumers: dict[str, Span] = {}
        self._producers: dict[str, Span] = {}

    def start(self, batch: Sequence[Delivery]) -> None:
        if not self.enabled:
            return
        for delivery in batch:
            attributes: dict[str, Any] = messaging_attributes(
                self._stream, "process", message_id=delivery.id, group=self._group
            )
            attributes["messaging.redis.delivery_count"] = delivery.deliveries
            self._consumers[delivery.id] = self._tracer.start_span(
                f"process {self._stream}",
                context=extract_fields(delivery.fields),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )

    def in_span(self, entry_id: str, coroutine: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run `coroutine` as a task whose spans are children of the entry's span."""
        span = self._consumers.get(entry_id)
        if span is None:
            return asyncio.ensure_future(coroutine)
        with trace.use_span(span, end_on_exit=False):
            return asyncio.ensure_future(coroutine)

    def event_fields(self, delivery: Delivery, kind: str) -> tuple[bytes, ...]:
        """`traceparent` fields for the event this entry produces."""
        parent = self._consumers.get(delivery.id)
        if parent is None:
            return passthrough_fields(delivery)
        if kind not in TRIGGER_OUTCOMES:
            # A display.acknowledged ends its trace (no edge delivers it): the entry's span is
            # the last hop, and a PRODUCER span more would tell nothing.
            return trace_fields(parent)
        producer = self._tracer.start_span(
            f"send {self._events}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.PRODUCER,
            attributes={**messaging_attributes(self._events, "send"), "rdisplay.event.type": kind},
        )
        self._producers[delivery.id] = producer
        return trace_fields(producer)

    def fail(self, entry_id: str, error: str) -> None:
        span = self._consumers.pop(entry_id, None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, error))
            span.add_event("processing failed", {"error": error})
            span.end()

    def dead_lettered(self, delivery: Delivery, reason: str, error: str) -> None:
        """A span for the move to the dead letter, in the entry's trace, marked as an error."""
        if not self.enabled:
            return
        with self._tracer.start_as_current_span(
            "send dead-letter",
            context=extract_fields(delivery.fields),
            kind=SpanKind.PRODUCER,
            attributes={
                **messaging_attributes(self._stream, "send", message_id=delivery.id),
                "rdisplay.dead_letter.reason": reason,
                "messaging.redis.delivery_count": delivery.deliveries,
            },
        ) as span:
            span.set_status(Status(StatusCode.ERROR, error))

    def finish(
        self, entry_ids: Sequence[str], statuses: Sequence[str], event_ids: Sequence[str]
    ) -> None:
        for entry_id, status, event_id in zip(entry_ids, statuses, event_ids, strict=True):
            producer = self._producers.pop(entry_id, None)
            if producer is not None:
                if event_id:
                    producer.set_attribute("messaging.message.id", event_id)
                producer.set_attribute("rdisplay.commit.status", status)
                producer.end()
            consumer = self._consumers.pop(entry_id, None)
            if consumer is not None:
                consumer.set_attribute("rdisplay.commit.status", status)
                consumer.end()

    def abort(self, error: str) -> None:
        """End every open span as failed (the commit did not happen)."""
        for spans in (self._producers, self._consumers):
            for span in spans.values():
                span.set_status(Status(StatusCode.ERROR, error))
                span.end()
            spans.clear()
