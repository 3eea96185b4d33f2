"""Small conversions shared by everything that talks to Redis."""

from __future__ import annotations

import time


def as_text(value: bytes | str) -> str:
    """A reply value as text (clients here return bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, as every payload carries it."""
    return time.time_ns() // 1_000_000
