"""The test OTLP receiver decodes what the real SDK and OTLP/HTTP exporter send."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    format_span_id,
    format_trace_id,
    set_span_in_context,
)

from tests.otlp_receiver import PROTOBUF, otlp_receiver

LINKED = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)


def _provider(url: str, *, batch: bool, compression: Compression) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "rdisplay-test", "deployment.environment": "t"})
    )
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=5)
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def _emit(provider: TracerProvider) -> tuple[str, str, str]:
    """A SERVER span with a PRODUCER child that fails; returns (trace id, parent id, child id)."""
    tracer = provider.get_tracer("tests.otlp")
    parent = tracer.start_span(
        "trigger receive",
        kind=SpanKind.SERVER,
        attributes={"rd.screen_id": "screen-1", "rd.display_index": 2},
        links=[Link(LINKED, {"rd.link": "display ack"})],
    )
    child = tracer.start_span(
        "rd:triggers publish",
        context=set_span_in_context(parent),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "redis",
            "messaging.destination.name": "rd:triggers",
            "messaging.batch.message_count": 1,
            "rd.ratio": 0.5,
            "rd.retry": True,
            "rd.tags": ["a", "b"],
        },
    )
    child.record_exception(ValueError("order service timed out"))
    child.set_status(Status(StatusCode.ERROR, "append failed"))
    child.end()
    parent.set_status(Status(StatusCode.OK))
    parent.end()
    context = parent.get_span_context()
    return (
        format_trace_id(context.trace_id),
        format_span_id(context.span_id),
        format_span_id(child.get_span_context().span_id),
    )


@pytest.mark.parametrize(
    ("batch", "compression"),
    [
        pytest.param(True, Compression.NoCompression, id="batch-plain"),
        pytest.param(True, Compression.Gzip, id="batch-gzip"),
        pytest.param(False, Compression.Deflate, id="simple-deflate"),
    ],
)
async def test_receiver_decodes_sdk_spans(batch: bool, compression: Compression) -> None:
    async with otlp_receiver() as receiver:
        provider = _provider(receiver.url, batch=batch, compression=compression)
        try:
            # The exporter posts with blocking requests: never from this loop's thread, which
            # has to answer. SimpleSpanProcessor exports when a span ends, so spans end there too.
            trace_id, parent_id, child_id = await asyncio.to_thread(_emit, provider)
            assert await asyncio.to_thread(provider.force_flush, 10_000)
        finally:
            await asyncio.to_thread(provider.shutdown)
        spans = await receiver.wait_for(lambda spans: len(spans) >= 2, timeout=10)

    assert len(spans) == 2
    by_name = {span.name: span for span in spans}
    parent, child = by_name["trigger receive"], by_name["rd:triggers publish"]

    assert (parent.trace_id, parent.span_id, parent.parent_span_id) == (trace_id, parent_id, "")
    assert (child.trace_id, child.span_id, child.parent_span_id) == (trace_id, child_id, parent_id)
    assert len(trace_id) == 32
    assert len(parent_id) == 16
    assert (parent.kind, child.kind) == ("SERVER", "PRODUCER")
    assert {span.service_name for span in spans} == {"rdisplay-test"}

    assert parent.attributes == {"rd.screen_id": "screen-1", "rd.display_index": 2}
    assert child.attributes == {
        "messaging.system": "redis",
        "messaging.destination.name": "rd:triggers",
        "messaging.batch.message_count": 1,
        "rd.ratio": 0.5,
        "rd.retry": True,
        "rd.tags": ("a", "b"),
    }
    assert (parent.status_code, parent.status_message) == ("OK", "")
    assert (child.status_code, child.status_message) == ("ERROR", "append failed")

    assert parent.events == []
    [(event_name, event_attributes)] = child.events
    assert event_name == "exception"
    assert event_attributes["exception.type"] == "ValueError"
    assert event_attributes["exception.message"] == "order service timed out"
    assert "ValueError" in str(event_attributes["exception.stacktrace"])

    assert parent.links == [(format_trace_id(LINKED.trace_id), format_span_id(LINKED.span_id))]
    assert child.links == []
    assert 0 < parent.start_time_unix_nano <= child.start_time_unix_nano
    assert child.end_time_unix_nano <= parent.end_time_unix_nano

    expected_encoding = {
        Compression.NoCompression: "",
        Compression.Gzip: "gzip",
        Compression.Deflate: "deflate",
    }[compression]
    assert set(receiver.content_encodings) == {expected_encoding}


async def test_wait_for_names_what_arrived_when_nothing_matches() -> None:
    async with otlp_receiver() as receiver:
        provider = _provider(receiver.url, batch=False, compression=Compression.NoCompression)
        try:
            await asyncio.to_thread(_emit, provider)
        finally:
            await asyncio.to_thread(provider.shutdown)
        with pytest.raises(AssertionError, match=r"trigger receive \(SERVER, rdisplay-test\)"):
            await receiver.wait_for(lambda spans: len(spans) > 2, timeout=0.2)
        assert len(receiver.named("rd:triggers publish")) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param({"Content-Type": "application/json"}, b"{}", 415, id="json"),
        pytest.param({"Content-Type": PROTOBUF}, b"\xff\xff\xff", 400, id="not-protobuf"),
        pytest.param(
            {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}, b"plain", 400, id="not-gzip"
        ),
        pytest.param(
            {"Content-Type": PROTOBUF, "Content-Encoding": "compress"},
            gzip.compress(b""),
            415,
            id="unknown-encoding",
        ),
    ],
)
async def test_bad_requests_are_refused_and_store_nothing(
    headers: dict[str, str], body: bytes, status: int
) -> None:
    async with otlp_receiver() as receiver, aiohttp.ClientSession() as session:
        async with session.post(f"{receiver.url}/v1/traces", data=body, headers=headers) as resp:
            assert resp.status == status
        async with session.get(f"{receiver.url}/v1/traces") as resp:
            assert resp.status == 405
        async with session.post(f"{receiver.url}/v1/metrics", data=b"") as resp:
            assert resp.status == 404  # traces only, like Jaeger
        assert receiver.spans == []
        assert receiver.exports == 0


async def test_an_empty_export_is_accepted() -> None:
    async with otlp_receiver() as receiver, aiohttp.ClientSession() as session:
        headers = {"Content-Type": PROTOBUF}
        async with session.post(f"{receiver.url}/v1/traces", data=b"", headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == PROTOBUF
            assert await resp.read() == b""  # an empty ExportTraceServiceResponse
        assert receiver.exports == 1
        assert receiver.spans == []
