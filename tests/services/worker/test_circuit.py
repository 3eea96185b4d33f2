"""The order service's circuit breaker, on a clock the test moves (SPEC 6)."""

from __future__ import annotations

from services.worker.circuit import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> CircuitState:
    """Read anew each time (the property moves with the clock)."""
    return breaker.state


def _opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker("order-api", clock=clock)
    for _ in range(5):
        breaker.record_failure()
    return breaker


def test_five_consecutive_failures_open_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("order-api", clock=clock)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()  # not consecutive: counting starts again
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) is CircuitState.CLOSED
    breaker.record_failure()
    assert state(breaker) is CircuitState.OPEN


def test_half_open_after_30_s_then_closed_after_two_successes() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 29.9
    assert state(breaker) is CircuitState.OPEN
    clock.now += 0.1
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.record_success()
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED


def test_a_failed_probe_opens_it_again_for_another_30_s() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 30
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.record_success()
    breaker.record_failure()  # one failure while HALF_OPEN is enough
    assert state(breaker) is CircuitState.OPEN
    clock.now += 29.9
    assert state(breaker) is CircuitState.OPEN
    clock.now += 0.1
    assert state(breaker) is CircuitState.HALF_OPEN


def test_state_changes_reach_the_gauge_callback() -> None:
    clock = Clock()
    seen: list[CircuitState] = []
    breaker = CircuitBreaker("order-api", clock=clock)
    breaker.on_change = seen.append
    for _ in range(5):
        breaker.record_failure()
    clock.now += 30
    _ = breaker.state
    breaker.record_success()
    breaker.record_success()
    assert seen == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
