"""The dead-letter stream's entry format: the original fields plus why it failed."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class DeadLetterReason(enum.StrEnum):
    POISON = "poison"
    """Unknown type or version, or data that cannot be decoded: no retry can help."""
    MAX_DELIVERIES = "max_deliveries"
    """Processing failed on each of MAX_DELIVERIES deliveries."""


ADDED_FIELDS = ("sourceId", "reason", "error", "deliveries", "failedAt")
MAX_ERROR_CHARS = 2_000


def dead_letter_fields(
    original: Mapping[bytes, bytes],
    *,
    source_id: str,
    reason: DeadLetterReason,
    error: str,
    deliveries: int,
    failed_at: int,
) -> list[bytes]:
    """Flat field/value list for the dead-letter entry (original fields first)."""
    out: list[bytes] = []
    for name, value in original.items():
        if name.decode(errors="replace") in ADDED_FIELDS:
            continue  # a redriven entry's old bookkeeping is replaced, not repeated
        out += (name, value)
    out += (
        b"sourceId",
        source_id.encode(),
        b"reason",
        reason.value.encode(),
        b"error",
        error[:MAX_ERROR_CHARS].encode(),
        b"deliveries",
        str(deliveries).encode(),
        b"failedAt",
        str(failed_at).encode(),
    )
    return out
