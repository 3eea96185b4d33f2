"""Names and rules shared by edge and worker: where a trigger's result and a screen's
projection live, and how a window is named."""

from __future__ import annotations

from streams.keys import Keyspace

IDEMPOTENCY_TTL_S = 3600
"""A trigger id from one user is never appended twice within this many seconds."""

PROJECTOR_GROUP = "projector"

PENDING_MARK = "pending"
"""Field of a trigger's result hash, set by the edge that answered it `PENDING`."""

PENDING_FIELD = "answeredPending"
"""Entry field the worker adds to a trigger's final event when its result hash carries
`PENDING_MARK`: every edge then sends `trigger:result` to the user's sockets it holds, so a
controller that reconnected to another edge after `PENDING` still gets the result."""


def result_key(keyspace: Keyspace, user_id: str, trigger_id: str) -> str:
    """Hash of one trigger's record: `outcome`, `eventId` (and the edge's bookkeeping)."""
    return keyspace.compound("trigger", user_id, trigger_id)


def screen_key(keyspace: Keyspace, screen_id: str) -> str:
    """Hash of a screen's live projection: `eventId`, `triggerEntryId`, `data`, display status."""
    return keyspace.key("screen", screen_id)


def window_id(screen_id: str, display_index: int) -> str:
    """A non-empty name, stable per screen and display index."""
    return f"{screen_id}#{display_index}"
