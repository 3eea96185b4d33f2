"""Socket.IO payloads (SPEC section 4): what clients send and what the edge answers."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from schemas.codes import ErrorCode

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TriggerId = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN)]
OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TraceParent = Annotated[str, msgspec.Meta(max_length=256)]


class TriggerRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`trigger` from a controller."""

    id: TriggerId
    order_id: OrderId
    timestamp: int
    display_index: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    traceparent: TraceParent | None = None
    tracestate: TraceParent | None = None


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`trigger:status` from a controller."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class DisplayReply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A screen's ack of a `display` command."""

    status: Annotated[str, msgspec.Meta(pattern="^(shown|failed)$")]
    error: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class AckData(msgspec.Struct, frozen=True, rename="camel"):
    event_id: str
    screen_id: str
    order_id: str
    display_index: int
    window_id: str
    document_url: str
    projected_at: int
    superseded: bool


class Display(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """`display` to a screen (`traceparent` only when tracing is on: the screen may pass it on)."""

    event_id: str
    trigger_id: str
    order_id: str
    display_index: int
    window_id: str
    document_url: str
    issued_at: int
    traceparent: str | None = None


def success_ack(trigger_id: str, data: AckData, *, duplicate: bool) -> dict[str, Any]:
    return {
        "id": trigger_id,
        "success": True,
        "duplicate": duplicate,
        "data": msgspec.to_builtins(data),
    }


def failure_ack(trigger_id: str | None, code: ErrorCode | str, error: str) -> dict[str, Any]:
    """`code` may be text: a recorded event can carry a code newer than this `ErrorCode`."""
    # Messages may quote client input (e.g. an unknown field's name): keep them short.
    return {"id": trigger_id, "success": False, "code": str(code), "error": error[:300]}
