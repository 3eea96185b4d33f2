"""One trace per trigger across edge and worker, with messaging attributes (in-memory export)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from observability.tracing import Telemetry, configure_telemetry
from services.config.settings import Settings
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import read_stream, wait_until

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def _telemetry(settings: Settings, exporter: InMemorySpanExporter, service: str) -> Telemetry:
    return configure_telemetry(
        settings.telemetry, default_service=service, processors=[SimpleSpanProcessor(exporter)]
    )


def _by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_controller_to_screen_ack(
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    exporter: InMemorySpanExporter,
    redis: Redis,
    keyspace: Keyspace,
    order_service: OrderService,
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ORDER_API_URL=order_service.url
    )
    worker_telemetry = _telemetry(settings, exporter, "rdisplay-worker")
    edge_telemetry = _telemetry(settings, exporter, "rdisplay-edge")
    await workers.start(settings, tracer=worker_telemetry.tracer)
    async with running_edge(settings, telemetry=edge_telemetry) as edge:
        screen = await connect(edge.url, mint(role="screen"))
        controller = await connect(edge.url, mint())
        try:
            payload = trigger_payload("TRACED", traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
            ack = await controller.emit("trigger", payload)
            assert ack["success"] is True
            [display] = await screen.wait_for("display")
            assert display["traceparent"].split("-")[1] == CLIENT_TRACE

            async def acknowledged() -> bool:
                names = {s.name for s in exporter.get_finished_spans()}
                events = await read_stream(redis, keyspace.events)
                done = any(e.type == "display.acknowledged" for e in events)
                processes = [
                    s for s in exporter.get_finished_spans() if s.name.startswith("process ")
                ]
                return done and f"receive {keyspace.events}" in names and len(processes) >= 2

            await wait_until(acknowledged)
        finally:
            await screen.sio.disconnect()
            await controller.sio.disconnect()
    worker_telemetry.shutdown()
    edge_telemetry.shutdown()

    spans = [s for s in exporter.get_finished_spans() if s.context is not None]
    assert {format(s.context.trace_id, "032x") for s in spans} == {CLIENT_TRACE}
    named = _by_name(spans)
    receive = named["trigger receive"][0]
    assert receive.kind is SpanKind.SERVER
    assert receive.parent is not None
    assert format(receive.parent.span_id, "016x") == CLIENT_SPAN
    assert receive.attributes is not None
    assert receive.attributes["rdisplay.ack.code"] == "OK"

    send = named[f"send {keyspace.triggers}"][0]
    assert send.kind is SpanKind.PRODUCER
    assert _parent(send) == receive.context.span_id
    attributes = dict(send.attributes or {})
    assert attributes["messaging.system"] == "redis"
    assert attributes["messaging.destination.name"] == keyspace.triggers
    assert attributes["messaging.operation.type"] == "send"
    entry_id = attributes["messaging.message.id"]

    processes = named[f"process {keyspace.triggers}"]
    process = next(p for p in processes if (p.attributes or {})["messaging.message.id"] == entry_id)
    assert process.kind is SpanKind.CONSUMER
    assert _parent(process) == send.context.span_id
    assert (process.attributes or {})["messaging.consumer.group.name"] == "projector"
    assert (process.attributes or {})["messaging.operation.type"] == "process"

    lookup = named["GET"][0]
    assert lookup.kind is SpanKind.CLIENT
    assert _parent(lookup) == process.context.span_id
    assert (lookup.attributes or {})["http.request.method"] == "GET"

    event_sends = [
        s
        for s in named[f"send {keyspace.events}"]
        if (s.attributes or {})["rdisplay.event.type"] == "trigger.projected"
    ]
    assert _parent(event_sends[0]) == process.context.span_id
    assert (event_sends[0].attributes or {})["messaging.message.id"] == ack["data"]["eventId"]

    delivered = named[f"receive {keyspace.events}"][0]
    assert delivered.kind is SpanKind.CONSUMER
    assert _parent(delivered) == event_sends[0].context.span_id
    # The display goes out inside the delivery span and names it; no span of its own.
    assert "send display" not in named
    assert display["traceparent"].split("-")[2] == format(delivered.context.span_id, "016x")
    assert (delivered.attributes or {})["rdisplay.display.sockets"] == 1
    # The screen's ack comes back as a display_ack entry whose process span hangs off the
    # delivery; its display.acknowledged gets no PRODUCER span (nothing reads it in the trace).
    ack_process = next(p for p in processes if _parent(p) == delivered.context.span_id)
    assert ack_process.kind is SpanKind.CONSUMER
    assert all(
        (s.attributes or {})["rdisplay.event.type"] != "display.acknowledged"
        for s in named[f"send {keyspace.events}"]
    )
    services = {s.resource.attributes["service.name"] for s in spans}
    assert services == {"rdisplay-edge", "rdisplay-worker"}


async def test_a_dead_lettered_trigger_shows_its_errors(
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    exporter: InMemorySpanExporter,
    order_service: OrderService,
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        ORDER_API_URL=order_service.url,
        MAX_DELIVERIES="2",
        RETRY_BASE_MS="50",
        RETRY_MAX_MS="100",
    )
    order_service.fail_next["doomed"] = 10
    worker_telemetry = _telemetry(settings, exporter, "rdisplay-worker")
    edge_telemetry = _telemetry(settings, exporter, "rdisplay-edge")
    await workers.start(settings, tracer=worker_telemetry.tracer)
    async with running_edge(settings, telemetry=edge_telemetry) as edge:
        controller = await connect(edge.url, mint())
        try:
            ack = await controller.emit("trigger", trigger_payload("doomed"))
            assert ack["code"] == "DEAD_LETTERED"
        finally:
            await controller.sio.disconnect()
    worker_telemetry.shutdown()
    edge_telemetry.shutdown()

    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    errors = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    names = sorted(s.name for s in errors)
    assert names.count("GET") == 2  # one failed lookup per delivery
    assert "send dead-letter" in names
    assert "trigger receive" in names
    processes = [s for s in errors if s.name.startswith("process ")]
    assert len(processes) >= 1
    assert all("503" in (s.status.description or "") for s in processes)


async def test_tracing_is_off_without_an_exporter(make_settings: SettingsFactory) -> None:
    telemetry = configure_telemetry(make_settings().telemetry, default_service="x")
    assert not telemetry.enabled
    with telemetry.tracer.start_as_current_span("nothing") as span:
        assert not span.get_span_context().is_valid
