"""Error codes sent to clients and recorded in events (SPEC section 4)."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"
    RATE_LIMITED = "RATE_LIMITED"
    FORBIDDEN = "FORBIDDEN"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    DEAD_LETTERED = "DEAD_LETTERED"
    PENDING = "PENDING"
    UNKNOWN_TRIGGER = "UNKNOWN_TRIGGER"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    MISSING_TOKEN = "MISSING_TOKEN"
    INVALID_TOKEN = "INVALID_TOKEN"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"


class Outcome(enum.StrEnum):
    """A trigger's recorded result, as kept for idempotency and counted by `stats`."""

    PROJECTED = "projected"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
