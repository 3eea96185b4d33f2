"""observability/export_process.py: spans reach the exporter process unchanged, in order, and
handing them over never makes the event loop wait."""

from __future__ import annotations

import asyncio
import functools
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from observability import export_process
from observability.export_process import LoopSpanProcessor, ProcessSpanExporter, flatten, rebuild


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


class _SlowFileExporter(SpanExporter):
    """In the child: writes each span's name to a file, `delay_s` per batch."""

    def __init__(self, path: str, delay_s: float) -> None:
        self._path = path
        self._delay_s = delay_s

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self._delay_s)
        with open(self._path, "a") as out:
            out.writelines(f"{span.name}\n" for span in spans)
        return SpanExportResult.SUCCESS


def _slow_pipeline(
    out: Path, *, delay_s: float, max_batch: int
) -> tuple[ProcessSpanExporter, TracerProvider]:
    """Spans batched on the loop, exported by a child that takes `delay_s` a batch."""
    resource = Resource.create({"service.name": "rdisplay-test"})
    exporter = ProcessSpanExporter(
        functools.partial(_SlowFileExporter, str(out), delay_s), resource
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(LoopSpanProcessor(exporter, max_batch=max_batch, delay_s=0.01))
    return exporter, provider


async def test_a_slow_exporter_never_stalls_the_loop_and_shutdown_delivers_all(
    tmp_path: Path,
) -> None:
    out = tmp_path / "spans.txt"
    exporter, provider = _slow_pipeline(out, delay_s=0.3, max_batch=50)
    tracer = provider.get_tracer("remote-display")
    started = time.perf_counter()
    for i in range(500):  # ~2 KB each, 1 MB in all: far more than a pipe holds
        tracer.start_span(f"span-{i}", attributes={"payload": f"{i}" + "x" * 2000}).end()
        if i % 50 == 0:
            await asyncio.sleep(0)  # the loop writes what the pipe could not take
    # 10 batches of ~100 KB, the child takes 0.3 s each: a hand-over that waited for the
    # pipe would have taken > 2 s here.
    assert time.perf_counter() - started < 1.0
    provider.shutdown()
    names = out.read_text().split()
    assert names == [f"span-{i}" for i in range(500)]  # all of them, in order
    assert exporter.dropped == 0


async def test_spans_beyond_the_buffer_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_process, "MAX_BUFFERED_BYTES", 200_000)
    out = tmp_path / "spans.txt"
    exporter, provider = _slow_pipeline(out, delay_s=0.2, max_batch=10)
    tracer = provider.get_tracer("remote-display")
    for i in range(400):  # ~2 KB each, 800 KB in all: the pipe and the buffer hold ~260 KB
        tracer.start_span(f"span-{i}", attributes={"payload": f"{i}" + "x" * 2000}).end()
    provider.shutdown()
    exported = out.read_text().split()
    assert exporter.dropped > 0
    assert len(exported) + exporter.dropped == 400
    indexes = [int(name.removeprefix("span-")) for name in exported]
    assert indexes == sorted(set(indexes))  # whole batches, in order, none twice
