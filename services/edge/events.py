"""The edge's reader of `rd:events` (of every partition's events stream): acks the triggers its
clients wait for, sends `display`s to its screens, and `trigger:result` to controllers that were
answered PENDING (on any edge)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from observability.metrics import Metrics
from observability.tracing import Telemetry, extract_fields, messaging_attributes
from schemas import codec
from schemas.errors import PoisonEntryError, StoreUnavailableError
from schemas.events import Event, TriggerDeadLettered, TriggerOutcome, TriggerProjected
from services.edge.chart import Chart
from services.edge.desk import TriggerDesk
from services.edge.displays import DisplayDispatcher
from services.edge.sio import EdgeServer
from services.keys import PENDING_FIELD
from streams.dead_letter import REDRIVE_FIELD
from streams.fence import ReplicaFence
from streams.keys import Keyspace
from streams.redis_errors import STORE_ERRORS
from streams.values import as_text

logger = logging.getLogger(__name__)

READ_COUNT = 512
READ_BLOCK_MS = 1000
# Entry fields that make an event's result go to the user's sockets on every edge.
_ANNOUNCE_FIELDS = (REDRIVE_FIELD.encode(), PENDING_FIELD.encode())


class EventsReader:
    """Reads event streams from where they stood when the edge started, on its own
    connection: one XREAD over all of them (they must share a slot on a cluster, so a
    cluster's edge runs one reader per partition)."""

    def __init__(
        self,
        *,
        redis: Redis,
        blocking: Redis,
        spaces: Sequence[Keyspace],
        sio: EdgeServer,
        desk: TriggerDesk,
        displays: DisplayDispatcher,
        telemetry: Telemetry,
        metrics: Metrics,
        fence: ReplicaFence | None = None,
        chart: Chart | None = None,
    ) -> None:
        self._redis = redis
        self._chart = chart
        self._blocking = blocking
        self._spaces = {space.events: space for space in spaces}
        self.streams = tuple(self._spaces)
        self._fence = fence if fence is not None and fence.enabled else None
        self._sio = sio
        self._desk = desk
        self._displays = displays
        self._telemetry = telemetry
        self._metrics = metrics

    async def last_event_ids(self) -> dict[str, str]:
        """Where to start: each stream's newest event now (older ones were answered by other
        edges)."""
        last: dict[str, str] = {}
        for stream in self.streams:
            last[stream] = await self._last_id(stream)
        return last

    async def _last_id(self, stream: str) -> str:
        for _ in range(50):
            try:
                last: Any = await self._redis.xrevrange(stream, count=1)
                return as_text(last[0][0]) if last else "0-0"
            except STORE_ERRORS:
                await asyncio.sleep(0.2)
        msg = f"the event store did not answer for 10 s (reading the last id of {stream})"
        raise StoreUnavailableError(msg)

    async def run(self, last_ids: dict[str, str]) -> None:
        positions = dict(last_ids)
        failures = 0
        while True:
            try:
                reply: Any = await self._blocking.xread(
                    positions,  # type: ignore[arg-type]  # redis-py's stubs want a wider type
                    count=READ_COUNT,
                    block=READ_BLOCK_MS,
                )
                failures = 0
            except STORE_ERRORS as exc:
                failures += 1
                logger.warning("event reader: redis unavailable", extra={"error": str(exc)})
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            for raw_stream, entries in reply or ():
                stream = as_text(raw_stream)
                if self._fence is not None and entries:
                    # REDIS_WAIT_REPLICAS: no ack or display of these before k replicas hold
                    # them (and what led to them). A batch whose last entry is not on the
                    # master that answered the fence was read from a master that died: read
                    # again from where it started (what survived comes again, the rest is
                    # gone and told to no one).
                    last = as_text(entries[-1][0])
                    if not await self._fence.hold(self._spaces[stream], (stream, last)):
                        logger.warning(
                            "events lost in a failover are not delivered",
                            extra={"stream": stream, "after": positions[stream]},
                        )
                        continue
                for raw_id, fields in entries:
                    positions[stream] = event_id = raw_id.decode()
                    try:
                        await self.on_event(event_id, fields, stream)
                    except Exception:
                        # One event's delivery failing must not end the reader: every later
                        # ack and display of its partitions would silently stop.
                        logger.exception("event not delivered", extra={"event_id": event_id})

    async def on_event(
        self, event_id: str, fields: dict[bytes, bytes], stream: str | None = None
    ) -> None:
        if not fields.get(b"type", b"").startswith(b"trigger."):
            return
        try:
            event = codec.decode_event(fields)
        except PoisonEntryError:
            logger.warning("undecodable event skipped", extra={"event_id": event_id})
            return
        if isinstance(event, TriggerDeadLettered):
            self._metrics.dead_letter.inc()
        if self._chart is not None and isinstance(event, TriggerOutcome):
            self._chart.observe(event_id, event)
        # A redriven dead letter, or a trigger some edge answered PENDING: its result goes to
        # the user's sockets on every edge (the controller may have moved).
        announce = any(name in fields for name in _ANNOUNCE_FIELDS)
        if not self._telemetry.enabled:
            await self._deliver(event_id, event, announce=announce)
            return
        if not isinstance(event, TriggerOutcome):
            return
        shows = isinstance(event, TriggerProjected) and self._displays.has_screen(event.screen_id)
        if not (shows or announce or self._desk.expects(event.user_id, event.trigger_id)):
            await self._deliver(event_id, event)
            return  # nothing on this edge is waiting for it: no span
        stream = stream or self.streams[0]
        with self._telemetry.tracer.start_as_current_span(
            f"receive {stream}",
            context=extract_fields(fields),
            kind=SpanKind.CONSUMER,
            attributes=messaging_attributes(stream, "receive", message_id=event_id),
        ):
            await self._deliver(event_id, event, announce=announce)

    async def _deliver(self, event_id: str, event: Event, *, announce: bool = False) -> None:
        late = self._desk.on_event(event_id, event)
        if late is None and announce:  # redriven, or answered PENDING on some edge
            late = self._desk.result_of(event_id, event)
        if late is not None:
            user_id, ack = late
            # Late results come in floods when the edge is behind: no loop turn per result.
            for sid in list(self._sio.in_room(f"user:{user_id}")):
                await self._sio.emit_to(sid, "trigger:result", ack)
        if isinstance(event, TriggerProjected) and not event.superseded:
            await self._displays.dispatch(event_id, event)
