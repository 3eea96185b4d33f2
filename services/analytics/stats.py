"""Outcome counts and latency percentiles over `rd:events` (`rdisplay stats`, SPEC section 8).

A trigger counts once, by its last outcome event in the range: a `trigger.dead_lettered` followed
by a `trigger.projected` after a redrive counts as projected. Latencies are whole milliseconds
between the timestamps the events carry; percentiles are nearest-rank, so each one is a sample.
Only events in the range are read: a projection whose display ack comes after `until` has no
`shown` sample, and an ack whose projection came before `since` is ignored.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import msgspec
from redis.asyncio import Redis

from schemas import codec
from schemas.errors import PoisonEntryError, UsageError
from schemas.events import (
    DisplayAcknowledged,
    Event,
    TriggerDeadLettered,
    TriggerProjected,
    TriggerRejected,
)
from streams.replay import pages

STAGES: dict[str, str] = {
    "received": "receivedAt - timestamp: controller clock to the edge (every outcome)",
    "projected": "projectedAt - receivedAt: edge to the worker's projection",
    "shown": "ackedAt - projectedAt: projection to the screen's display ack with status shown",
    "total": "ackedAt - timestamp: controller clock to shown",
}
OUTCOMES = ("projected", "rejected", "dead_lettered")
PERCENTILES = (50, 95, 99)
PAGE_SIZE = 1000

_PROJECTED, _REJECTED, _DEAD_LETTERED = range(3)
_NONE = -(2**63)  # "no such time" in the int64 columns
# Timestamps of a trigger that failed its schema may be missing (0): no latency sample then.
_UNKNOWN = 0


class StageLatency(msgspec.Struct, frozen=True):
    """Nearest-rank percentiles of one stage, in ms (null without samples), and the sample count."""

    p50: int | None
    p95: int | None
    p99: int | None
    count: int


class Outcomes(msgspec.Struct, frozen=True):
    projected: int = 0
    rejected: int = 0
    dead_lettered: int = 0


class Summary(msgspec.Struct, frozen=True, rename="camel"):
    """Outcome counts and per-stage latencies of a set of triggers (all, or one screen's)."""

    outcomes: Outcomes
    latency_ms: dict[str, StageLatency]


class StatsRange(msgspec.Struct, frozen=True):
    """The entry ids read: `since` inclusive, `until` exclusive; null is the stream's end."""

    since: str | None
    until: str | None


class StatsReport(msgspec.Struct, frozen=True, rename="camel"):
    """`rdisplay stats --json`: `overall` and `screens` as SPEC section 8 names them.

    Triggers whose event has no `screenId` (a trigger that failed its schema) count in
    `overall` only.
    """

    overall: Summary
    screens: dict[str, Summary]
    range: StatsRange
    stages: dict[str, str]
    events_read: int
    events_skipped: int


def nearest_rank(ordered: Sequence[int], percent: int) -> int | None:
    """The nearest-rank percentile of ascending `ordered`: its ⌈percent/100 · n⌉-th value.

    That is the smallest sample with at least `percent` % of the samples at or below it; for
    the samples 1..100, p50 is 50, p95 is 95 and p99 is 99. None when there are no samples.
    """
    if not 0 < percent <= 100:
        msg = f"percentile {percent} is outside (0, 100]"
        raise UsageError(msg)
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # integer ceiling: no float rounding at the edges
    return ordered[rank - 1]


def stage_latency(samples: array[int]) -> StageLatency:
    ordered = sorted(samples)
    p50, p95, p99 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return StageLatency(p50=p50, p95=p95, p99=p99, count=len(ordered))


class _Samples:
    """One set's outcome counts and latency samples, int64 arrays (8 bytes a sample)."""

    __slots__ = ("outcomes", "stages")

    def __init__(self) -> None:
        self.outcomes = [0, 0, 0]
        self.stages: dict[str, array[int]] = {name: array("q") for name in STAGES}

    def summary(self) -> Summary:
        return Summary(
            outcomes=Outcomes(*self.outcomes),
            latency_ms={name: stage_latency(values) for name, values in self.stages.items()},
        )


class StatsCollector:
    """Folds `rd:events` entries, in stream order, into a `StatsReport`.

    One slot per trigger, in int64 columns; a dict from (userId, triggerId) to its slot and one
    from each live projection's event id to its slot (for the display acks) are the only
    per-trigger Python objects.
    """

    def __init__(self) -> None:
        self.events_read = 0
        self.events_skipped = 0
        self._slots: dict[tuple[str, str], int] = {}
        self._by_event: dict[str, int] = {}
        self._screen_names: list[str] = []
        self._screen_index: dict[str, int] = {}
        self._screen = array("I")
        self._outcome = array("b")
        self._timestamp = array("q")
        self._received_at = array("q")
        self._projected_at = array("q")
        self._shown_at = array("q")
        self._event_ms = array("Q")  # the projection's entry id, to forget it when replaced
        self._event_seq = array("Q")

    def add_entry(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self.events_read += 1
        try:
            event = codec.decode_event(fields)
        except PoisonEntryError:
            self.events_skipped += 1
            return
        self.add(entry_id, event)

    def add(self, entry_id: str, event: Event) -> None:
        if isinstance(event, DisplayAcknowledged):
            self._acknowledged(event)
        elif isinstance(event, TriggerProjected):
            slot = self._slot(event.user_id, event.trigger_id, event.screen_id)
            self._outcome_at(slot, _PROJECTED, event.timestamp, event.received_at)
            self._projected_at[slot] = event.projected_at
            ms, _, seq = entry_id.partition("-")
            self._event_ms[slot], self._event_seq[slot] = int(ms), int(seq or 0)
            self._by_event[entry_id] = slot
        elif isinstance(event, TriggerRejected):
            slot = self._slot(event.user_id, event.trigger_id, event.screen_id)
            self._outcome_at(slot, _REJECTED, event.timestamp, event.received_at)
        elif isinstance(event, TriggerDeadLettered):
            slot = self._slot(event.user_id, event.trigger_id, event.screen_id)
            self._outcome_at(slot, _DEAD_LETTERED, event.timestamp, event.received_at)

    def _acknowledged(self, event: DisplayAcknowledged) -> None:
        if event.status != "shown":
            return
        slot = self._by_event.get(event.event_id)
        # The first shown ack is when the screen showed it; a later one is a re-display.
        if slot is not None and self._shown_at[slot] == _NONE:
            self._shown_at[slot] = event.acked_at

    def _slot(self, user_id: str, trigger_id: str, screen_id: str) -> int:
        key = (user_id, trigger_id)
        # Without both ids a trigger cannot be told apart from another: each event is its own.
        slot = self._slots.get(key) if user_id and trigger_id else None
        if slot is None:
            slot = len(self._outcome)
            if user_id and trigger_id:
                self._slots[key] = slot
            self._screen.append(0)
            self._outcome.append(0)
            for column in (self._timestamp, self._received_at, self._projected_at, self._shown_at):
                column.append(_NONE)
            self._event_ms.append(0)
            self._event_seq.append(0)
        elif self._projected_at[slot] != _NONE:
            # A later outcome replaces the projection: its acks no longer count.
            self._by_event.pop(f"{self._event_ms[slot]}-{self._event_seq[slot]}", None)
        self._screen[slot] = self._screen_of(screen_id)
        return slot

    def _screen_of(self, screen_id: str) -> int:
        index = self._screen_index.get(screen_id)
        if index is None:
            index = self._screen_index[screen_id] = len(self._screen_names)
            self._screen_names.append(screen_id)
        return index

    def _outcome_at(self, slot: int, outcome: int, timestamp: int, received_at: int) -> None:
        self._outcome[slot] = outcome
        self._timestamp[slot] = timestamp if timestamp > _UNKNOWN else _NONE
        self._received_at[slot] = received_at if received_at > _UNKNOWN else _NONE
        self._projected_at[slot] = _NONE
        self._shown_at[slot] = _NONE

    def report(self, *, since: str | None, until: str | None) -> StatsReport:
        per_screen = [_Samples() for _ in self._screen_names]
        for slot in range(len(self._outcome)):
            samples = per_screen[self._screen[slot]]
            samples.outcomes[self._outcome[slot]] += 1
            timestamp = self._timestamp[slot]
            received = self._received_at[slot]
            projected = self._projected_at[slot]
            shown = self._shown_at[slot]  # only ever set on a projection
            stages = samples.stages
            if timestamp != _NONE and received != _NONE:
                stages["received"].append(received - timestamp)
            if projected != _NONE and received != _NONE:
                stages["projected"].append(projected - received)
            if shown != _NONE:
                stages["shown"].append(shown - projected)
                if timestamp != _NONE:
                    stages["total"].append(shown - timestamp)
        outcome_totals = [sum(s.outcomes[i] for s in per_screen) for i in range(len(OUTCOMES))]
        # One stage's samples of every screen at a time: the overall copy stays one stage long.
        overall_latency: dict[str, StageLatency] = {}
        for name in STAGES:
            merged: array[int] = array("q")
            for samples in per_screen:
                merged.extend(samples.stages[name])
            overall_latency[name] = stage_latency(merged)
        return StatsReport(
            overall=Summary(outcomes=Outcomes(*outcome_totals), latency_ms=overall_latency),
            screens={
                name: samples.summary()
                for name, samples in sorted(zip(self._screen_names, per_screen, strict=True))
                if name
            },
            range=StatsRange(since=since, until=until),
            stages=dict(STAGES),
            events_read=self.events_read,
            events_skipped=self.events_skipped,
        )


async def collect_stats(
    redis: Redis,
    stream: str | Sequence[str],
    *,
    since: str | None = None,
    until: str | None = None,
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StatsReport | None:
    """Read `stream` from entry id `since` (inclusive) to `until` (exclusive) and fold it.

    `since` and `until` are entry ids (`streams.replay.parse_bound` makes them of times), read
    in XRANGE pages of `page_size`, each continuing after the last id read. `progress` gets
    the number of events read after each page; None is returned when `stop()` turned true
    between pages.
    """
    collector = StatsCollector()
    async for page in pages(redis, stream, since=since, until=until, page_size=page_size):
        for entry_id, fields in page:
            collector.add_entry(entry_id.decode(), fields)
        if progress is not None:
            progress(collector.events_read)
        if stop is not None and stop():
            return None
    return collector.report(since=since, until=until)
