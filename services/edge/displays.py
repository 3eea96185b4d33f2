"""`display` commands to screens: sent to every socket of the screen's room on this edge,
re-sent until acked (at most `max_sends`), and each ack appended as a `display_ack` entry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Tracer

from observability.tracing import traceparent_of
from schemas import codec
from schemas.entries import DisplayAckEntry
from schemas.events import TriggerProjected
from schemas.wire import Display, DisplayReply
from services.edge.sio import EdgeServer
from streams.redis_errors import TRANSIENT_ERRORS
from streams.store import StreamStore
from streams.values import now_ms

logger = logging.getLogger(__name__)

MAX_PENDING_DISPLAYS = 50_000


@dataclass(slots=True)
class _Pending:
    screen_id: str
    payload: dict[str, Any]
    sends: int
    due: float


def display_of(
    event_id: str, event: TriggerProjected, issued_at: int, traceparent: str | None = None
) -> Display:
    return Display(
        traceparent=traceparent,
        event_id=event_id,
        trigger_id=event.trigger_id,
        order_id=event.order_id,
        display_index=event.display_index,
        window_id=event.window_id,
        document_url=event.document_url,
        issued_at=issued_at,
    )


ACK_APPEND_ATTEMPTS = 4
"""A screen's ack survives a store outage of about 1.75 s (a failover) before it is given up."""


def screen_room(screen_id: str) -> str:
    return f"screen:{screen_id}"


class DisplayDispatcher:
    def __init__(
        self,
        *,
        sio: EdgeServer,
        store: StreamStore,
        triggers_stream: Callable[[str], str],
        resend_after_s: float = 5.0,
        max_sends: int = 3,
        clock_ms: Callable[[], int] = now_ms,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracing = tracer is not None and not isinstance(tracer, NoOpTracer)
        self._sio = sio
        self._store = store
        self._stream_for = triggers_stream
        self.resend_after_s = resend_after_s
        self.max_sends = max_sends
        self._clock_ms = clock_ms
        self._pending: dict[tuple[str, str], _Pending] = {}

    def has_screen(self, screen_id: str) -> bool:
        """Whether a socket of this screen is connected to this edge."""
        return not self._sio.room_is_empty(screen_room(screen_id))

    async def dispatch(self, event_id: str, event: TriggerProjected) -> None:
        """Send a projected trigger's display to every socket of its screen on this edge."""
        sids = list(self._sio.in_room(screen_room(event.screen_id)))
        if not sids:
            return
        traceparent = None
        if self._tracing:
            # The edge's delivery span (events.py) is current: one span per hop, not one per
            # display; its context parents the screen's display_ack.
            span = trace.get_current_span()
            span.set_attribute("rdisplay.display.sockets", len(sids))
            traceparent = traceparent_of(span)
        display = display_of(event_id, event, self._clock_ms(), traceparent)
        payload = msgspec.to_builtins(display)
        for sid in sids:
            await self.send(sid, event.screen_id, payload)

    async def send(self, sid: str, screen_id: str, payload: dict[str, Any]) -> None:
        key = (sid, payload["eventId"])
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING_DISPLAYS:
                logger.warning("too many unacked displays; not tracking resends")
            else:
                pending = _Pending(screen_id, payload, 0, 0.0)
                self._pending[key] = pending
        if pending is not None:
            pending.sends += 1
            pending.due = time.monotonic() + self.resend_after_s
        callback = functools.partial(self._on_ack, sid, screen_id, payload["eventId"], payload)
        await self._sio.emit_to(sid, "display", payload, callback=callback)

    async def _on_ack(
        self, sid: str, screen_id: str, event_id: str, payload: dict[str, Any], *reply: Any
    ) -> None:
        if self._pending.pop((sid, event_id), None) is None:
            return  # a late ack of a re-sent display: the first one counted
        try:
            answer = msgspec.convert(reply[0] if reply else None, DisplayReply)
        except msgspec.ValidationError as exc:
            answer = DisplayReply(status="failed", error=f"invalid display ack: {exc}")
        entry = DisplayAckEntry(
            trigger_id=payload["triggerId"],
            event_id=event_id,
            screen_id=screen_id,
            status="shown" if answer.status == "shown" else "failed",
            acked_at=self._clock_ms(),
            error=answer.error,
        )
        fields: dict[str, bytes | str] = dict(codec.entry_fields(entry))
        if payload.get("traceparent"):
            fields["traceparent"] = payload["traceparent"]  # the display's span is its parent
        stream = self._stream_for(screen_id)
        for attempt in range(ACK_APPEND_ATTEMPTS):
            try:
                await self._store.append(stream, fields)
                return
            except TRANSIENT_ERRORS as exc:  # a failover or restart: worth a second try
                if attempt + 1 < ACK_APPEND_ATTEMPTS:
                    await asyncio.sleep(0.25 * 2**attempt)
                    continue
                logger.warning(
                    "display ack not recorded",
                    extra={"event_id": event_id, "error": repr(exc), "attempts": attempt + 1},
                )
            except Exception:
                logger.exception("display ack not recorded", extra={"event_id": event_id})
                return

    def forget_socket(self, sid: str) -> None:
        for key in [k for k in self._pending if k[0] == sid]:
            del self._pending[key]

    async def run_resends(self, stop: asyncio.Event) -> None:
        """Re-send displays that were not acked in time; give up after `max_sends`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            now = time.monotonic()
            for key, pending in list(self._pending.items()):
                if pending.due > now:
                    continue
                if pending.sends >= self.max_sends:
                    del self._pending[key]
                    logger.warning(
                        "display not acknowledged",
                        extra={"sid": key[0], "event_id": key[1], "sends": pending.sends},
                    )
                    continue
                try:
                    await self.send(key[0], pending.screen_id, pending.payload)
                except Exception as exc:  # that socket's problem; the other resends go on
                    logger.warning(
                        "display not re-sent", extra={"event_id": key[1], "error": repr(exc)}
                    )
