"""Span export off the service's process: the OTLP encoding runs in a child process.

The OpenTelemetry SDK encodes spans to protobuf in its batch thread at ~40 µs a span, holding
the GIL: with every trigger traced (~9 spans) that stalled the event loop for tens of ms per
batch and made ack p95 several times worse (issue 13). Here the batch thread only flattens
each span to a tuple of plain values and pickles the batch into a pipe (a few µs a span); a
child process rebuilds the spans and exports them with the standard OTLP exporter, which reads
every OTEL_EXPORTER_OTLP_* variable as usual.

The child ends when its pipe closes (the service stopped, however it stopped). A batch the
child cannot take is dropped like the SDK drops spans when its queue is full (logged once).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

logger = logging.getLogger(__name__)

FlatSpan = tuple[Any, ...]
JOIN_S = 10.0


def flatten(span: ReadableSpan) -> FlatSpan:
    """The span as plain values (pickles in C, fast)."""
    context = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        span.name,
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        parent.span_id if parent is not None else None,
        parent.is_remote if parent is not None else False,
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        span.status.status_code.value,
        span.status.description,
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        scope.name if scope is not None else "",
        scope.version if scope is not None else None,
    )


def rebuild(flat: FlatSpan, resource: Resource) -> ReadableSpan:
    (
        name,
        trace_id,
        span_id,
        flags,
        parent_id,
        parent_remote,
        kind,
        start,
        end,
        attributes,
        status_code,
        status_description,
        events,
        scope_name,
        scope_version,
    ) = flat
    trace_flags = TraceFlags(flags)
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace_flags),
        parent=(
            SpanContext(trace_id, parent_id, is_remote=parent_remote, trace_flags=trace_flags)
            if parent_id is not None
            else None
        ),
        resource=resource,
        attributes=attributes,
        events=[Event(e_name, e_attributes, e_time) for e_name, e_time, e_attributes in events],
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), status_description),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope(scope_name, scope_version),
    )


def _child(
    connection: Connection,
    make_exporter: Callable[[], SpanExporter],
    resource_attributes: dict[str, Any],
) -> None:
    exporter = make_exporter()
    resource = Resource(resource_attributes)
    try:
        while True:
            try:
                batch = connection.recv()
            except EOFError:  # the service is gone
                return
            if batch is None:  # a clean shutdown: everything before it is exported
                return
            exporter.export([rebuild(flat, resource) for flat in batch])
    finally:
        exporter.shutdown()


class ProcessSpanExporter(SpanExporter):
    """A SpanExporter whose encoding and sending happen in a child process.

    `make_exporter` builds the real exporter there (it must be picklable: a module-level
    function or a `functools.partial` of one).
    """

    def __init__(self, make_exporter: Callable[[], SpanExporter], resource: Resource) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded event loop
        self._connection, child_end = context.Pipe(duplex=False)[::-1]
        self._process = context.Process(
            target=_child,
            args=(child_end, make_exporter, dict(resource.attributes)),
            name="otlp-exporter",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._lock = threading.Lock()
        self._failed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        batch = [flatten(span) for span in spans]
        try:
            with self._lock:
                self._connection.send(batch)
        except (OSError, ValueError) as exc:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "span exporter process is gone; spans dropped", extra={"error": repr(exc)}
                )
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Send what is left, let the child export it, wait for it to end."""
        try:
            with self._lock:
                self._connection.send(None)
                self._connection.close()
        except (OSError, ValueError):
            pass  # already gone: nothing left to wait for
        self._process.join(JOIN_S)
        if self._process.is_alive():
            logger.warning("span exporter process did not end in time; stopping it")
            self._process.terminate()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # batches are in the child's pipe already
