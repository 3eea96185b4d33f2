"""Entries of `rd:triggers`, written by the edge and consumed by the `projector` group.

Every stream entry has the fields `type`, `v` and `data` (JSON of one struct below), plus
`traceparent`/`tracestate` when tracing is on.

Schema evolution (SPEC section 6): within `v: 1` a writer may add fields, so these structs
ignore fields they do not know (an older worker reads a newer edge's entries during a rolling
upgrade), and every field beyond SPEC's lists has a default (a newer reader decodes an older
writer's entries). Only client payloads (`schemas.wire`) are strict.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Entry(msgspec.Struct, frozen=True, rename="camel"):
    """Base of every stream entry payload."""


class TriggerEntry(Entry, frozen=True, rename="camel"):
    """`trigger`: a controller asked for an order's document on its screen."""

    id: Ident
    user_id: Ident
    screen_id: Ident
    order_id: OrderId
    display_index: NonNegative
    timestamp: int
    received_at: int
    edge_id: str


class DisplayAckEntry(Entry, frozen=True, rename="camel"):
    """`display_ack`: a screen reported whether it showed a display command."""

    trigger_id: Ident
    event_id: Ident
    screen_id: Ident
    status: Literal["shown", "failed"]
    acked_at: int
    error: str | None = None


ENTRY_TYPES: dict[str, type[Entry]] = {
    "trigger": TriggerEntry,
    "display_ack": DisplayAckEntry,
}
