"""observability/export_process.py: spans survive the trip to the exporter process unchanged."""

from __future__ import annotations

import pickle

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability.export_process import flatten, rebuild


def _spans() -> tuple[list[ReadableSpan], Resource]:
    resource = Resource.create({"service.name": "rdisplay-test"})
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("remote-display", "1.0")
    with tracer.start_as_current_span("trigger receive", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("rdisplay.trigger.id", "t-1")
        with tracer.start_as_current_span(
            "send rd:triggers",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "redis", "messaging.batch.message_count": 3},
        ) as child:
            child.add_event("retried", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "order service answered HTTP 503"))
    return list(memory.get_finished_spans()), resource


def test_a_flattened_span_encodes_as_the_original() -> None:
    spans, resource = _spans()
    flat = pickle.loads(pickle.dumps([flatten(span) for span in spans]))  # as the pipe does

    rebuilt = [rebuild(item, resource) for item in flat]

    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()
