"""OpenTelemetry tracing: `configure_telemetry(config)` from entry points only.

Off (a no-op tracer, no per-message work) unless an exporter is configured: an OTLP endpoint
(OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER=console. The SDK
reads the other standard variables itself (sampler, headers, timeouts, resource attributes).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NoOpTracer, Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability.config import TelemetryConfig
from observability.export_process import LoopSpanProcessor, ProcessSpanExporter

logger = logging.getLogger(__name__)

_propagator = TraceContextTextMapPropagator()

MESSAGING_SYSTEM = "redis"


@dataclass
class Telemetry:
    """The tracer services use, and the provider to flush on shutdown."""

    tracer: Tracer
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        """Flush every span still buffered, then stop exporting."""
        if self.provider is not None:
            self.provider.shutdown()


def disabled() -> Telemetry:
    return Telemetry(tracer=NoOpTracer())


def configure_telemetry(
    config: TelemetryConfig,
    *,
    default_service: str,
    processors: Iterable[SpanProcessor] = (),
) -> Telemetry:
    """Build the tracer for one process. `processors` lets tests add an in-memory exporter."""
    extra = list(processors)
    if config.traces_exporter == "none" and not extra:
        return disabled()
    resource = Resource.create({"service.name": config.service_name or default_service})
    provider = TracerProvider(resource=resource)
    if config.traces_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif config.traces_exporter == "otlp":
        # The OTLP encoding runs in a process of its own, batches are made on the event loop
        # (observability/export_process.py): no thread of the SDK's holds the loop's GIL.
        exporter = ProcessSpanExporter(functools.partial(otlp_exporter, config), resource)
        provider.add_span_processor(loop_processor(exporter))
    for processor in extra:
        provider.add_span_processor(processor)
    logger.info(
        "tracing on",
        extra={"exporter": config.traces_exporter, "endpoint": config.otlp_traces_endpoint},
    )
    return Telemetry(tracer=provider.get_tracer("remote-display"), provider=provider)


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def loop_processor(exporter: ProcessSpanExporter) -> LoopSpanProcessor:
    """The batching of the OTLP path; OTEL_BSP_SCHEDULE_DELAY (ms) and
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE apply as they do to the SDK's batch processor."""
    return LoopSpanProcessor(
        exporter,
        max_batch=max(1, int(_env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 256))),
        delay_s=max(0.0, _env_number("OTEL_BSP_SCHEDULE_DELAY", 200) / 1000),
    )


def otlp_exporter(config: TelemetryConfig) -> SpanExporter:
    """The OTLP span exporter the configuration names (built in the exporter process)."""
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.otlp_traces_endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.otlp_traces_endpoint)


def extract(traceparent: bytes | str | None, tracestate: bytes | str | None = None) -> Context:
    """The context a `traceparent` (+ `tracestate`) names; an empty one if absent or invalid."""
    if not traceparent:
        return Context()
    carrier = {"traceparent": _text(traceparent)}
    if tracestate:
        carrier["tracestate"] = _text(tracestate)
    return _propagator.extract(carrier)


def extract_fields(fields: Mapping[bytes, bytes]) -> Context:
    """The context of a stream entry (its `traceparent`/`tracestate` fields)."""
    return extract(fields.get(b"traceparent"), fields.get(b"tracestate"))


def trace_fields(span: Span) -> tuple[bytes, ...]:
    """`traceparent`/`tracestate` field/value pairs naming `span`, for a stream entry."""
    context = span.get_span_context()
    if not context.is_valid:
        return ()
    out: tuple[bytes, ...] = (b"traceparent", _traceparent(context).encode())
    if context.trace_state:
        out += (b"tracestate", context.trace_state.to_header().encode())
    return out


def traceparent_of(span: Span) -> str | None:
    context = span.get_span_context()
    return _traceparent(context) if context.is_valid else None


def _traceparent(context: SpanContext) -> str:
    # What TraceContextTextMapPropagator.inject writes, without a carrier and a context per call.
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def messaging_attributes(
    destination: str, operation: str, *, message_id: str | None = None, group: str | None = None
) -> dict[str, str]:
    """OpenTelemetry messaging semantic-convention attributes for a stream operation."""
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "messaging.operation.name": {"send": "xadd", "process": "process", "receive": "xread"}.get(
            operation, operation
        ),
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if group:
        attributes["messaging.consumer.group.name"] = group
    return attributes


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
