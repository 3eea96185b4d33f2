"""Span export off the service's process: the OTLP encoding runs in a child process.

The OpenTelemetry SDK encodes spans to protobuf in its batch thread at ~40 µs a span, holding
the GIL: with every trigger traced that stalled the event loop for tens of ms per batch and
made ack p95 several times worse (issue 13). Here `LoopSpanProcessor` flattens each span to a
tuple of plain values where it ends (the event loop; no thread competes for the GIL) and
`ProcessSpanExporter` pickles each batch into a non-blocking pipe; a child process rebuilds
the spans and exports them with the standard OTLP exporter, which reads every
OTEL_EXPORTER_OTLP_* variable as usual.

The child runs at a lower CPU priority (nice 10): under load the service's processes get the
cores first and the export catches up when they idle. If it cannot, the pipe's backlog grows
to `MAX_BUFFERED_BYTES` and further batches are dropped and counted (as the SDK drops spans at
a full queue, logged once): the service never waits.

The child ends when its pipe closes (the service stopped, however it stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

logger = logging.getLogger(__name__)

FlatSpan = tuple[Any, ...]
JOIN_S = 10.0
EXPORTER_NICE = 10
MAX_BUFFERED_BYTES = 16 * 1024 * 1024


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


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None  # the service is gone
        chunks += chunk
    return bytes(chunks)


def _frames(fd: int) -> Iterator[list[FlatSpan]]:
    """The batches the service writes: a 4-byte length, then a pickled list; length 0 ends."""
    while True:
        header = _read_exactly(fd, 4)
        if header is None:
            return
        (size,) = struct.unpack("!I", header)
        if size == 0:  # a clean shutdown: everything before it is exported
            return
        body = _read_exactly(fd, size)
        if body is None:
            return
        yield pickle.loads(body)


def _child(
    connection: Connection,
    make_exporter: Callable[[], SpanExporter],
    resource_attributes: dict[str, Any],
) -> None:
    # Export is never on a trigger's path: let the service's own processes have the cores
    # first (on 2 busy cores an equal share cost every hop of every trigger a wait).
    with contextlib.suppress(OSError):
        os.nice(EXPORTER_NICE)
    exporter = make_exporter()
    resource = Resource(resource_attributes)
    try:
        for batch in _frames(connection.fileno()):
            exporter.export([rebuild(flat, resource) for flat in batch])
    finally:
        exporter.shutdown()


class ProcessSpanExporter(SpanExporter):
    """A SpanExporter whose encoding and sending happen in a child process.

    `make_exporter` builds the real exporter there (it must be picklable: a module-level
    function or a `functools.partial` of one). `submit` never blocks: what the pipe cannot
    take now is written when it can (by the running event loop, or at shutdown), up to
    `MAX_BUFFERED_BYTES`; beyond that batches are dropped, as the SDK drops spans when its
    queue is full (logged once).
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
        self._fd = self._connection.fileno()
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._warned = False
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.submit([flatten(span) for span in spans])

    def submit(self, batch: list[FlatSpan]) -> SpanExportResult:
        """Queue one batch for the child; written now as far as the pipe takes it."""
        body = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            if len(self._buffer) + len(body) > MAX_BUFFERED_BYTES:
                self._drop(len(batch), "the exporter process is behind")
                return SpanExportResult.FAILURE
            self._buffer += struct.pack("!I", len(body))
            self._buffer += body
            self._write_some()
        return SpanExportResult.SUCCESS

    def _write_some(self) -> None:
        """Write what the pipe takes now; let the running loop write the rest (lock held)."""
        try:
            while self._buffer:
                written = os.write(self._fd, self._buffer)
                del self._buffer[:written]
        except BlockingIOError:
            pass
        except OSError as exc:  # the child is gone
            self._drop(0, repr(exc))
            self._buffer.clear()
            self._closed = True
        if self._buffer and self._writer_loop is None:
            with contextlib.suppress(RuntimeError):  # no running loop: shutdown writes it
                loop = asyncio.get_running_loop()
                loop.add_writer(self._fd, self._on_writable)
                self._writer_loop = loop
        elif not self._buffer and self._writer_loop is not None:
            self._writer_loop.remove_writer(self._fd)
            self._writer_loop = None

    def _on_writable(self) -> None:
        with self._lock:
            self._write_some()

    def _drop(self, spans: int, why: str) -> None:
        self.dropped += spans
        if not self._warned:
            self._warned = True
            logger.warning("spans dropped", extra={"error": why, "spans": spans})

    def shutdown(self) -> None:
        """Write what is left, let the child export it, wait for it to end."""
        with self._lock:
            if self._writer_loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._writer_loop.remove_writer(self._fd)
                self._writer_loop = None
            if not self._closed:
                self._closed = True
                try:
                    os.set_blocking(self._fd, True)
                    os.write(self._fd, bytes(self._buffer) + struct.pack("!I", 0))
                except OSError:
                    pass  # already gone: nothing left to wait for
                self._buffer.clear()
                self._connection.close()
        self._process.join(JOIN_S)
        if self._process.is_alive():
            logger.warning("span exporter process did not end in time; stopping it")
            self._process.terminate()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # batches are in the child's pipe already


class LoopSpanProcessor(SpanProcessor):
    """Batches finished spans on the thread that ends them (the event loop) and hands each
    batch to a ProcessSpanExporter: no batch thread competing for the GIL with the loop.

    A batch goes when it holds `max_batch` spans or `delay_s` after its first span.
    """

    def __init__(
        self, exporter: ProcessSpanExporter, *, max_batch: int = 256, delay_s: float = 0.2
    ) -> None:
        self._exporter = exporter
        self._max_batch = max_batch
        self._delay_s = delay_s
        self._batch: list[FlatSpan] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        flat = flatten(span)
        with self._lock:
            self._batch.append(flat)
            if len(self._batch) < self._max_batch:
                if self._timer is None:
                    with contextlib.suppress(RuntimeError):  # no loop: shutdown sends it
                        loop = asyncio.get_running_loop()
                        self._timer = loop.call_later(self._delay_s, self._flush)
                return
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if batch:
            self._exporter.submit(batch)

    def shutdown(self) -> None:
        self._flush()
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self._flush()
        return True
