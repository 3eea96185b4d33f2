"""The operator's chart: per-second outcomes and p95 latency from events, bounded in time."""

from __future__ import annotations

from schemas.events import TriggerDeadLettered, TriggerProjected, TriggerRejected
from services.edge.chart import Chart


def _projected(received_at: int, *, superseded: bool = False) -> TriggerProjected:
    return TriggerProjected(
        trigger_id="t",
        user_id="u",
        received_at=received_at,
        window_id="w",
        document_url="/d.pdf",
        projected_at=received_at,
        deliveries=1,
        superseded=superseded,
    )


def test_seconds_count_outcomes_and_their_p95() -> None:
    now = [1_000.5]
    chart = Chart(seconds=10, clock=lambda: now[0])
    for n in range(20):  # latencies 0..19 ms in second 998
        chart.observe(f"{998_000 + 100 + n}-0", _projected(998_100))
    chart.observe("998999-0", _projected(1, superseded=True))  # counted when first projected
    chart.observe("999000-0", TriggerRejected(trigger_id="t", user_id="u", code="X", message="m"))
    chart.observe(
        "999001-3",
        TriggerDeadLettered(trigger_id="t", user_id="u", deliveries=2, code="X", message="m"),
    )
    points = chart.series()
    assert [p["t"] for p in points] == list(range(990, 1000))  # up to the last whole second
    by_second = {p["t"]: p for p in points}
    assert by_second[998] == {
        "t": 998,
        "projected": 20,
        "rejected": 0,
        "dead_lettered": 0,
        "p95": 18,
    }
    assert by_second[999]["rejected"] == 1
    assert by_second[999]["dead_lettered"] == 1
    assert by_second[999]["p95"] is None  # no receivedAt: no latency
    assert by_second[997] == {
        "t": 997,
        "projected": 0,
        "rejected": 0,
        "dead_lettered": 0,
        "p95": None,
    }
    assert [p["t"] for p in chart.series(after=997)] == [998, 999]


def test_old_seconds_are_dropped() -> None:
    now = [100.0]
    chart = Chart(seconds=5, clock=lambda: now[0])
    chart.observe("90000-0", _projected(90_000))
    now[0] = 200.0
    chart.observe("199000-0", _projected(199_000))  # a new second prunes what is out of range
    assert 90 not in chart._counts
    assert sum(p["projected"] for p in chart.series()) == 1
