"""Prometheus metrics (SPEC section 7), one registry per process, no globals.

When several processes serve one deployment (`rdisplay serve` runs the edge and the worker as
processes of their own), each writes its values to files in one directory
(prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`) and the edge's /metrics
adds them up: counters and histograms summed, gauges by the mode each declares.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Acks take milliseconds: buckets from 1 ms to 10 s.
ACK_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.008, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class AckTally:
    """What /health reports: the triggers this edge answered since it started."""

    total: int = 0
    success: int = 0
    failure: int = 0
    errors: Tally[str] = field(default_factory=Tally)


class Metrics:
    """Every instrument of SPEC section 7; edge and worker in one process share one."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        """`multiprocess_dir`: PROMETHEUS_MULTIPROC_DIR, where every process of the deployment
        writes its values (prometheus_client reads the variable itself when it starts)."""
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.triggers = Counter(
            "rd_triggers", "Triggers answered by this edge, by outcome", ["outcome"], registry=r
        )
        self.ack_seconds = Histogram(
            "rd_trigger_ack_seconds",
            "Time from receiving a trigger to answering it",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.stream_pending = Gauge(
            "rd_stream_pending",
            "Entries delivered and not yet acked",
            ["stream", "group"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.stream_lag = Gauge(
            "rd_stream_lag",
            "Entries not yet delivered to the group",
            ["stream", "group"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dead_letter_entries = Gauge(
            "rd_dead_letter_entries",
            "Entries in a dead-letter stream",
            ["stream"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.alive = Gauge(
            "rd_alive",
            "Processes beating their presence now, by kind (edges, workers)",
            ["kind"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.screens_online = Gauge(
            "rd_screens_online",
            "Screens connected to a live edge now",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.screen_last_seen = Gauge(
            "rd_screen_last_seen_timestamp_seconds",
            "When a live edge last saw the screen connected (alert: time() minus this)",
            ["screen"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dead_letter = Counter(
            "rd_dead_letter", "Dead-lettered triggers seen in the event log", registry=r
        )
        self.connections = Gauge(
            "rd_connections",
            "Socket.IO connections",
            ["role"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.circuit_state = Gauge(
            "rd_circuit_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["name"],
            registry=r,
            multiprocess_mode="livemax",  # one worker's open circuit is the deployment's
        )
        self.redeliveries = Counter(
            "rd_redeliveries", "Entries processed again after an earlier delivery", registry=r
        )
        self.acks = AckTally()
        self._outcomes: dict[str, Any] = {}

    def count_ack(self, outcome: str, *, success: bool, seconds: float) -> None:
        child = self._outcomes.get(outcome)
        if child is None:  # labels() costs a lock and a lookup: once per outcome
            child = self._outcomes[outcome] = self.triggers.labels(outcome)
        child.inc()
        self.ack_seconds.observe(seconds)
        self.acks.total += 1
        if success:
            self.acks.success += 1
        else:
            self.acks.failure += 1
            self.acks.errors[outcome.upper()] += 1

    def render(self) -> bytes:
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(every_process)
