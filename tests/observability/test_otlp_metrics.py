"""The same metrics pushed by OTLP/HTTP, decoded by a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from observability.metrics import Metrics
from observability.otlp_metrics import bridge
from services.config.settings import load_settings
from tests.helpers import free_port


@pytest.fixture
async def metrics_receiver() -> AsyncIterator[tuple[str, list[ExportMetricsServiceRequest]]]:
    received: list[ExportMetricsServiceRequest] = []

    async def handle(request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        body = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


async def test_metrics_are_pushed_by_otlp(
    metrics_receiver: tuple[str, list[ExportMetricsServiceRequest]],
) -> None:
    url, received = metrics_receiver
    settings = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": url}, dotenv=None)
    assert settings.metrics_exporter == "otlp"
    assert settings.otlp_metrics_endpoint == f"{url}/v1/metrics"
    metrics = Metrics()
    metrics.count_ack("projected", success=True, seconds=0.002)
    metrics.count_ack("rate_limited", success=False, seconds=0.001)
    metrics.connections.labels("screen").inc()
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=settings.otlp_metrics_endpoint),
        export_interval_millis=3_600_000,
    )
    provider = bridge(metrics, reader, service="rdisplay-test")
    await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)
    values: dict[str, list[tuple[dict[str, str], float]]] = {}
    for request in received:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = metric.sum.data_points or metric.gauge.data_points
                    for point in points:
                        labels = {a.key: a.value.string_value for a in point.attributes}
                        value = point.as_double or point.as_int
                        values.setdefault(metric.name, []).append((labels, value))
    assert ({"outcome": "projected"}, 1) in values["rd_triggers"]
    assert ({"outcome": "rate_limited"}, 1) in values["rd_triggers"]
    assert ({"role": "screen"}, 1) in values["rd_connections"]
    assert values["rd_trigger_ack_seconds_count"][0][1] == 2
    assert abs(values["rd_trigger_ack_seconds_sum"][0][1] - 0.003) < 1e-9


def test_no_otlp_metrics_without_an_endpoint() -> None:
    assert load_settings({}, dotenv=None).metrics_exporter == "none"
