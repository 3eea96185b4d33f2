"""The operator's chart (issue 16): triggers per second by outcome and the p95 of their latency
over the last `CHART_SECONDS`, from the events every edge reads (`EventsReader` calls
`observe`), so every edge's chart counts every edge's triggers. The latency is the event's time
(its id) minus the trigger's `receivedAt`: from the edge's receipt to the outcome being written.
Seconds are those of the events' ids, the same on every edge."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from schemas.events import TriggerDeadLettered, TriggerOutcome, TriggerProjected, TriggerRejected

CHART_SECONDS = 300
MAX_LATENCIES_PER_SECOND = 2000
OUTCOMES = ("projected", "rejected", "dead_lettered")


class Chart:
    """Per-second counts and latencies, kept for `seconds`; memory is bounded by it."""

    def __init__(self, seconds: int = CHART_SECONDS, clock: Callable[[], float] = time.time):
        self._seconds = seconds
        self._clock = clock
        self._counts: dict[int, list[int]] = {}
        self._latencies: dict[int, list[int]] = {}

    def observe(self, event_id: str, event: TriggerOutcome) -> None:
        if isinstance(event, TriggerProjected):
            if event.superseded:
                return  # the trigger's outcome was counted when it was first projected
            outcome = 0
        elif isinstance(event, TriggerRejected):
            outcome = 1
        elif isinstance(event, TriggerDeadLettered):
            outcome = 2
        else:
            return
        at_ms = int(event_id.partition("-")[0])
        second = at_ms // 1000
        counts = self._counts.get(second)
        if counts is None:
            counts = self._counts[second] = [0, 0, 0]
            self._prune(second)
        counts[outcome] += 1
        if event.received_at > 0:
            latencies = self._latencies.setdefault(second, [])
            if len(latencies) < MAX_LATENCIES_PER_SECOND:
                latencies.append(max(0, at_ms - event.received_at))

    def _prune(self, newest: int) -> None:
        oldest = newest - self._seconds
        for second in [s for s in self._counts if s <= oldest]:
            del self._counts[second]
            self._latencies.pop(second, None)

    def series(self, after: int | None = None) -> list[dict[str, Any]]:
        """Every whole second up to the last one that ended (a second with no trigger is
        zeros), newest last; with `after`, only the seconds after it."""
        last = int(self._clock()) - 1
        first = last - self._seconds + 1
        if after is not None:
            first = max(first, after + 1)
        points = []
        for second in range(first, last + 1):
            counts = self._counts.get(second, (0, 0, 0))
            latencies = self._latencies.get(second)
            point: dict[str, Any] = {"t": second, **dict(zip(OUTCOMES, counts, strict=True))}
            point["p95"] = _p95(latencies) if latencies else None
            points.append(point)
        return points


def _p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
