"""What telemetry needs to know, and nothing of the business: services build it from their
settings (`services.config.settings.Settings.telemetry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

TracesExporter = Literal["otlp", "console", "none"]
OtlpProtocol = Literal["grpc", "http/protobuf"]
MetricsExporter = Literal["otlp", "none"]


class TelemetryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Exporters and where they send. The OpenTelemetry SDK reads every other standard
    OTEL_* variable itself (sampler, batch sizes, headers, resource attributes)."""

    service_name: str | None = None
    traces_exporter: TracesExporter = "none"
    otlp_traces_endpoint: str | None = None
    otlp_protocol: OtlpProtocol = "http/protobuf"
    metrics_exporter: MetricsExporter = "none"
    otlp_metrics_endpoint: str | None = None
    metrics_dir: Path | None = None
    """Where the processes of one deployment write their metrics (PROMETHEUS_MULTIPROC_DIR)."""
