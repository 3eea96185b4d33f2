"""A real OTLP/HTTP trace receiver on loopback: what Jaeger's port 4318 does, for tests.

`async with otlp_receiver() as receiver:` serves `POST /v1/traces` (binary protobuf, optionally
gzip- or deflate-encoded) on a free port; point OTEL_EXPORTER_OTLP_ENDPOINT at `receiver.url`
and read the decoded spans from `receiver.spans`, or `await receiver.wait_for(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.helpers import free_port

PROTOBUF = "application/x-protobuf"
MAX_BODY_BYTES = 16 * 1024 * 1024

# What the OTLP exporters send; aiohttp decodes gzip and deflate bodies before the handler reads.
_ENCODINGS = ("", "identity", "gzip", "deflate")
_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUS_CODES = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it; ids are lowercase hex, as in a `traceparent`.

    Attribute values are str, bool, int, float or bytes; arrays become tuples (as the SDK keeps
    them) and key-value lists dicts.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, object]
    status_code: str
    status_message: str
    events: list[tuple[str, dict[str, object]]]
    links: list[tuple[str, str]]
    service_name: str
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0


@dataclass
class OtlpReceiver:
    """Spans received so far, in arrival order, and the base URL to export them to."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    """Accepted export requests."""
    content_encodings: list[str] = field(default_factory=list)
    """The Content-Encoding of each accepted request ("" when none)."""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(
        self, predicate: Callable[[Sequence[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until `predicate(spans)` holds; returns the spans then, or fails listing them."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.spans)), timeout
                )
            except TimeoutError:
                received = ", ".join(f"{s.name} ({s.kind}, {s.service_name})" for s in self.spans)
                msg = f"no match within {timeout} s; received: {received or 'no span'}"
                raise AssertionError(msg) from None
            return list(self.spans)

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    async def handle_traces(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != PROTOBUF:
            # OTLP/HTTP also allows JSON; Jaeger accepts it, but our services send protobuf.
            return web.Response(status=415, text=f"Content-Type must be {PROTOBUF}")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            return web.Response(status=415, text=f"unsupported Content-Encoding {encoding}")
        try:
            body = await request.read()  # aiohttp's HTTP layer undoes gzip and deflate
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
        except (web.RequestPayloadError, DecodeError) as exc:
            return web.Response(status=400, text=f"undecodable export request: {exc}")
        async with self._changed:
            self.spans.extend(decode_request(message))
            self.exports += 1
            self.content_encodings.append(encoding)
            self._changed.notify_all()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF
        )


def decode_request(message: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service_name = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, service_name) for span in scope_spans.spans)
    return spans


def _span(span: Span, service_name: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=_KINDS.get(span.kind, str(span.kind)),
        attributes=_attributes(span.attributes),
        status_code=_STATUS_CODES.get(span.status.code, str(span.status.code)),
        status_message=span.status.message,
        events=[(event.name, _attributes(event.attributes)) for event in span.events],
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        service_name=service_name,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
    )


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, object]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """Serve an OtlpReceiver on 127.0.0.1 for the duration of the block."""
    receiver = OtlpReceiver()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/traces", receiver.handle_traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        receiver.url = f"http://127.0.0.1:{port}"
        yield receiver
    finally:
        await runner.cleanup()
