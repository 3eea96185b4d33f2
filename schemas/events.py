"""Events of `rd:events`, written by workers; the edge and analysts read them."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.codes import ErrorCode


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """Base of every event payload."""


class TriggerProjected(Event, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`trigger.projected`: the trigger decided what its screen shows.

    `superseded` must stay the last field: the commit script flips its encoded value in place
    once it knows whether a newer trigger for the screen was already projected.
    """

    trigger_id: str
    user_id: str
    screen_id: str
    order_id: str
    display_index: int
    window_id: str
    document_url: str
    trigger_entry_id: str
    timestamp: int
    received_at: int
    projected_at: int
    deliveries: int
    superseded: bool = False


class TriggerRejected(Event, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`trigger.rejected`: a final, non-retryable failure (validation, unknown order)."""

    trigger_id: str
    user_id: str
    screen_id: str
    order_id: str
    display_index: int
    trigger_entry_id: str
    timestamp: int
    received_at: int
    rejected_at: int
    deliveries: int
    code: ErrorCode
    message: str


class TriggerDeadLettered(Event, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`trigger.dead_lettered`: processing failed too often; the entry is in the dead letter.

    `dead_letter_id` must stay the last field: the commit script fills it in once the
    dead-letter entry exists.
    """

    trigger_id: str
    user_id: str
    screen_id: str
    order_id: str
    display_index: int
    trigger_entry_id: str
    timestamp: int
    received_at: int
    failed_at: int
    deliveries: int
    code: ErrorCode
    message: str
    dead_letter_id: str = ""


class DisplayAcknowledged(Event, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`display.acknowledged`: one per `display_ack` entry, carrying its fields."""

    trigger_id: str
    event_id: str
    screen_id: str
    status: Literal["shown", "failed"]
    acked_at: int
    display_ack_entry_id: str
    acknowledged_at: int
    error: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    "trigger.projected": TriggerProjected,
    "trigger.rejected": TriggerRejected,
    "trigger.dead_lettered": TriggerDeadLettered,
    "display.acknowledged": DisplayAcknowledged,
}
