"""The one place that matches Redis error strings."""

from __future__ import annotations

from redis.exceptions import ResponseError


def is_busygroup(exc: BaseException) -> bool:
    """XGROUP CREATE on a group that exists."""
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


def is_nogroup(exc: BaseException) -> bool:
    """A group command on a stream or group that does not exist (e.g. after a FLUSHDB)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")
