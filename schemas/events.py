"""Events of `rd:events`, written by workers; the edge and analysts read them.

Readers are tolerant (SPEC section 6, schema evolution): unknown fields are ignored, and every
field beyond SPEC's lists has a default, so an event written by an older or a newer v1 worker
decodes. A default of `""` or `0` means the writer did not record that value (the worker itself
writes them so for a trigger whose entry failed its schema). `code` is text, not the enum: a
newer worker may write a code an older reader does not know, and it still reaches the client.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of every event payload."""


class TriggerOutcome(Event, frozen=True, kw_only=True, rename="camel"):
    """What every final event of a trigger carries first: the trigger, as far as its entry
    could be read (a trigger that failed its schema may lack any of it but its ids)."""

    trigger_id: str
    user_id: str
    screen_id: str = ""
    order_id: str = ""
    display_index: int = 0
    trigger_entry_id: str = ""
    timestamp: int = 0
    received_at: int = 0


class TriggerProjected(TriggerOutcome, frozen=True, kw_only=True, rename="camel"):
    """`trigger.projected`: the trigger decided what its screen shows (unless `superseded`:
    a newer trigger of the screen was projected first, and the screen stays as it is)."""

    window_id: str
    document_url: str
    projected_at: int
    deliveries: int
    superseded: bool = False


class TriggerRejected(TriggerOutcome, frozen=True, kw_only=True, rename="camel"):
    """`trigger.rejected`: a final, non-retryable failure (validation, unknown order)."""

    rejected_at: int = 0
    deliveries: int = 0
    code: str
    message: str


class TriggerDeadLettered(TriggerOutcome, frozen=True, kw_only=True, rename="camel"):
    """`trigger.dead_lettered`: processing failed too often; the entry is in the dead letter.

    `dead_letter_id` must stay the last field: the commit script appends the dead-letter
    entry's id there (services/worker/projector.py checks the layout).
    """

    failed_at: int = 0
    deliveries: int
    code: str
    message: str
    dead_letter_id: str = ""


class DisplayAcknowledged(Event, frozen=True, kw_only=True, rename="camel"):
    """`display.acknowledged`: one per `display_ack` entry, carrying its fields."""

    trigger_id: str
    event_id: str
    screen_id: str
    status: Literal["shown", "failed"]
    acked_at: int
    display_ack_entry_id: str = ""
    acknowledged_at: int = 0
    error: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    "trigger.projected": TriggerProjected,
    "trigger.rejected": TriggerRejected,
    "trigger.dead_lettered": TriggerDeadLettered,
    "display.acknowledged": DisplayAcknowledged,
}
