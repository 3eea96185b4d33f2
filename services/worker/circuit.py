"""A circuit breaker for the order service (SPEC section 6).

CLOSED → OPEN after `failure_threshold` consecutive failures → HALF_OPEN after `reset_after_s`
→ CLOSED after `success_threshold` successes (any failure while HALF_OPEN opens it again).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable

from schemas.errors import RemoteDisplayError

logger = logging.getLogger(__name__)


class CircuitState(enum.IntEnum):
    """Values as exported by the `rd_circuit_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpenError(RemoteDisplayError):
    """The circuit is open: the call was not attempted (a transient failure)."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        success_threshold: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.success_threshold = success_threshold
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self.on_change: Callable[[CircuitState], None] | None = None

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= (
            self.reset_after_s
        ):
            self._transition(CircuitState.HALF_OPEN)
        return self._state

    def check(self) -> None:
        """Raise CircuitOpenError unless a call may be attempted now."""
        if self.state is CircuitState.OPEN:
            msg = f"circuit {self.name} is open"
            raise CircuitOpenError(msg)

    def record_success(self) -> None:
        if self._state is CircuitState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.success_threshold:
                self._transition(CircuitState.CLOSED)
        else:
            self._failures = 0

    def record_failure(self) -> None:
        if self._state is CircuitState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    async def wait_closed_or_half_open(self) -> None:
        """Sleep while the circuit is open (until it may be probed again)."""
        while self.state is CircuitState.OPEN:
            remaining = self.reset_after_s - (self._clock() - self._opened_at)
            await asyncio.sleep(max(min(remaining, 1.0), 0.01))

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(CircuitState.OPEN)

    def _transition(self, state: CircuitState) -> None:
        if state is self._state:
            return
        logger.warning(
            "circuit state changed",
            extra={"circuit": self.name, "from": self._state.name, "to": state.name},
        )
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
        self._failures = 0
        self._successes = 0
