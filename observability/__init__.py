"""Telemetry setup and helpers: logging, tracing, metrics."""
