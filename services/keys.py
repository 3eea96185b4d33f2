"""Names and rules shared by edge, worker and analytics: where a trigger's result and a screen's
projection live, the fields of both hashes, and how a window is named.

The Lua scripts use the same field names: they are given them from here (`LUA_NAMES`, as
`@@NAME` placeholders, see `streams.scripts`), never spelled again in Lua.
"""

from __future__ import annotations

from schemas.codes import Outcome
from streams.keys import Keyspace

IDEMPOTENCY_TTL_S = 3600
"""A trigger id from one user is never appended twice within this many seconds."""

PROJECTOR_GROUP = "projector"


class ResultField:
    """Fields of a trigger's result record (`result_key`)."""

    ENTRY = "entry"
    """Its `rd:triggers` entry id, set by the admission."""
    OUTCOME = "outcome"
    """`projected`, `rejected` or `dead_lettered` (`schemas.codes.Outcome`), set by the commit."""
    EVENT_ID = "eventId"
    """The id of its final event in `rd:events`."""
    PENDING = "pending"
    """Set by the edge that answered it `PENDING` (see `PENDING_FIELD`)."""


class ProjectionField:
    """Fields of a screen's live projection (`screen_key`)."""

    EVENT_ID = "eventId"
    TRIGGER_ENTRY_ID = "triggerEntryId"
    """The projected trigger's `rd:triggers` id: the newest one of the screen wins."""
    DATA = "data"
    """The `trigger.projected` event's data, as written."""
    DISPLAY_STATUS = "displayStatus"
    DISPLAY_ACKED_AT = "displayAckedAt"
    DISPLAY_ERROR = "displayError"


PENDING_MARK = ResultField.PENDING

PENDING_FIELD = "answeredPending"
"""Entry field the worker adds to a trigger's final event when its result hash carries
`PENDING_MARK`: every edge then sends `trigger:result` to the user's sockets it holds, so a
controller that reconnected to another edge after `PENDING` still gets the result."""

LUA_NAMES: dict[str, str] = {
    "RESULT_ENTRY": ResultField.ENTRY,
    "RESULT_OUTCOME": ResultField.OUTCOME,
    "RESULT_EVENT_ID": ResultField.EVENT_ID,
    "RESULT_PENDING": ResultField.PENDING,
    "OUTCOME_PROJECTED": Outcome.PROJECTED.value,
    "OUTCOME_REJECTED": Outcome.REJECTED.value,
    "OUTCOME_DEAD_LETTERED": Outcome.DEAD_LETTERED.value,
    "PROJECTION_EVENT_ID": ProjectionField.EVENT_ID,
    "PROJECTION_TRIGGER_ENTRY_ID": ProjectionField.TRIGGER_ENTRY_ID,
    "PROJECTION_DATA": ProjectionField.DATA,
    "PROJECTION_DISPLAY_STATUS": ProjectionField.DISPLAY_STATUS,
    "PROJECTION_DISPLAY_ACKED_AT": ProjectionField.DISPLAY_ACKED_AT,
    "PROJECTION_DISPLAY_ERROR": ProjectionField.DISPLAY_ERROR,
    "PENDING_FIELD": PENDING_FIELD,
}


def result_key(keyspace: Keyspace, user_id: str, trigger_id: str) -> str:
    """Hash of one trigger's record (`ResultField`)."""
    return keyspace.compound("trigger", user_id, trigger_id)


def screen_key(keyspace: Keyspace, screen_id: str) -> str:
    """Hash of a screen's live projection (`ProjectionField`)."""
    return keyspace.key("screen", screen_id)


def window_id(screen_id: str, display_index: int) -> str:
    """A non-empty name, stable per screen and display index."""
    return f"{screen_id}#{display_index}"
