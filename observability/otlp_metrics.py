"""The Prometheus registry's metrics, also pushed by OTLP when an OTLP endpoint is configured.

The registry stays the one source (/metrics, /health); an OpenTelemetry MeterProvider observes
it on each export (OTEL_METRIC_EXPORT_INTERVAL, 60 s by default): counters and gauges as
observable instruments, the ack histogram as its `_count` and `_sum` counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from observability.config import TelemetryConfig
from observability.metrics import Metrics


def start_otlp_metrics(
    config: TelemetryConfig, metrics: Metrics, *, default_service: str
) -> MeterProvider | None:
    """A MeterProvider exporting `metrics` by OTLP, or None when no exporter is configured."""
    if config.metrics_exporter != "otlp":
        return None
    reader = PeriodicExportingMetricReader(_exporter(config))
    return bridge(metrics, reader, service=config.service_name or default_service)


def bridge(
    metrics: Metrics, reader: PeriodicExportingMetricReader, *, service: str
) -> MeterProvider:
    provider = MeterProvider(
        resource=Resource.create({"service.name": service}), metric_readers=[reader]
    )
    meter = provider.get_meter("remote-display")
    for family in metrics.registry.collect():
        if family.type == "counter":
            meter.create_observable_counter(
                family.name,
                [_samples(metrics, f"{family.name}_total")],
                description=family.documentation,
            )
        elif family.type == "gauge":
            meter.create_observable_gauge(
                family.name, [_samples(metrics, family.name)], description=family.documentation
            )
        elif family.type == "histogram":
            for suffix in ("count", "sum"):
                meter.create_observable_counter(
                    f"{family.name}_{suffix}",
                    [_samples(metrics, f"{family.name}_{suffix}")],
                    description=family.documentation,
                )
    return provider


def _samples(
    metrics: Metrics, sample_name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for family in metrics.registry.collect():
            for sample in family.samples:
                if sample.name == sample_name:
                    yield Observation(sample.value, dict(sample.labels))

    return observe


def _exporter(config: TelemetryConfig) -> MetricExporter:
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.otlp_metrics_endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.otlp_metrics_endpoint)
