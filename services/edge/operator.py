"""The operator's live feed (SPEC 10 `/operator`, issue 16), over the page's Socket.IO connection.

An admin's socket sends `operator:subscribe` and gets a snapshot of the whole store: every known
screen (online across all edges, what it shows, its last display ack), live edges and workers
(with their age and circuits, from their heartbeats' info), each partition's lag, pending and
dead-letter count, the newest dead letters, the pairings waiting for approval, and the chart.
It is then in room `operator`, and every `TICK_S` while that room holds a socket on this edge,
the sections that changed are pushed as `operator:update` (the Socket.IO Admin UI's pattern:
a snapshot, then changes). A page that reconnects subscribes again: a fresh snapshot.

Actions, each answered with an ack body and refused with FORBIDDEN for a non-admin:
`operator:dead-letter {id, partition?}` (one entry, described as `rdisplay dlq show` does),
`operator:redrive {id, partition?}` or `{all: true}` (as `rdisplay dlq redrive`: the same
atomic re-append, fenced by REDIS_WAIT_REPLICAS), and `operator:resend {screenId}`: the screen's
current display again, published on `{prefix}:operator:resend` so that whichever edge holds the
screen's sockets sends it.

The chart (`chart.py`) is built from the events every edge reads, so it counts every edge's
triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from schemas.codes import ErrorCode
from services.edge.chart import Chart
from services.edge.http import HttpApi
from services.edge.pairing import PairingService
from services.edge.sessions import Sessions
from services.edge.sio import EdgeServer
from services.keys import ProjectionField, screen_key
from services.runtime.presence import read_presence, screens_seen
from streams.dead_letter import DeadLetterStore, describe
from streams.fence import ReplicaFence
from streams.ids import parse_id
from streams.partitions import Partitions
from streams.redis_errors import STORE_ERRORS
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)

ROOM = "operator"
TICK_S = 2.0
MAX_SCREENS = 1000
"""Screens listed (ids in order); a chain with more needs a page with search (not yet)."""
MAX_DEAD_LETTERS = 100
REDRIVE_FENCE_S = 10.0

Ack = dict[str, Any]
_json = msgspec.json.Encoder()
_data = msgspec.json.Decoder(dict[str, Any])


def _refused(code: ErrorCode, message: str) -> Ack:
    return {"success": False, "code": code.value, "error": message}


class OperatorFeed:
    def __init__(
        self,
        *,
        sio: EdgeServer,
        sessions: Sessions,
        redis: Redis,
        partitions: Partitions,
        http: HttpApi,
        pairing: PairingService,
        resend: Callable[[str], Awaitable[int]],
        maxlen: int,
        fence: ReplicaFence | None = None,
        chart: Chart | None = None,
    ) -> None:
        self._sio = sio
        self._sessions = sessions
        self._redis = redis
        self._partitions = partitions
        self._http = http
        self._pairing = pairing
        self._resend = resend
        self._fence = fence
        self.chart = chart or Chart()
        self._stores = [
            DeadLetterStore(
                redis=redis, dead_letter=space.dead_letter, source=space.triggers, maxlen=maxlen
            )
            for space in partitions.spaces
        ]
        self.channel = partitions.root.key("operator", "resend")
        self._sent: dict[str, bytes] = {}
        self._chart_until: int | None = None
        self._wake = asyncio.Event()

    def register(self) -> None:
        self._sio.on("operator:subscribe", self.on_subscribe)
        self._sio.on("operator:dead-letter", self.on_dead_letter)
        self._sio.on("operator:redrive", self.on_redrive)
        self._sio.on("operator:resend", self.on_resend)

    def _admin(self, sid: str) -> Ack | None:
        """None for an admin's socket, else the refusal."""
        connection = self._sessions.get(sid)
        if connection is None:
            return _refused(ErrorCode.TOKEN_EXPIRED, "token expired")
        if connection.claims.role != "admin":
            return _refused(ErrorCode.FORBIDDEN, "the operator's view is for admins")
        return None

    # -- the snapshot ---------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        root = self._partitions.root
        now = now_ms()
        presence = await read_presence(self._redis, root, now=now)
        seen = await screens_seen(self._redis, root)
        streams = await self._http.stream_state()
        return {
            "at": now,
            "screens": await self._screens(presence.screens, seen),
            "edges": [
                {"id": edge, "expiresAt": expires, **presence.info.get(edge, {})}
                for edge, expires in sorted(presence.edges.items())
            ],
            "workers": [
                {"id": worker, "expiresAt": expires, **presence.info.get(worker, {})}
                for worker, expires in sorted(presence.workers.items())
            ],
            "streams": self._stream_rows(streams),
            "deadLetters": await self._dead_letters(),
            "approvals": await self._pairing.waiting(),
        }

    async def _screens(
        self, online: dict[str, dict[str, int]], seen: dict[str, int]
    ) -> list[dict[str, Any]]:
        ids = sorted(set(online) | set(seen))[:MAX_SCREENS]
        async with self._redis.pipeline(transaction=False) as pipe:
            for screen in ids:
                pipe.hgetall(screen_key(self._partitions.for_screen(screen), screen))
            projections = await pipe.execute()
        rows = []
        for screen, raw in zip(ids, projections, strict=True):
            fields = {as_text(k): as_text(v) for k, v in raw.items()}
            row: dict[str, Any] = {
                "screenId": screen,
                "online": screen in online,
                "edges": sorted(online.get(screen, {})),
                "lastSeen": seen.get(screen),
                "eventId": fields.get(ProjectionField.EVENT_ID),
                "displayStatus": fields.get(ProjectionField.DISPLAY_STATUS),
                "displayAckedAt": _int(fields.get(ProjectionField.DISPLAY_ACKED_AT)),
                "displayError": fields.get(ProjectionField.DISPLAY_ERROR) or None,
            }
            data = fields.get(ProjectionField.DATA)
            if data:
                with contextlib.suppress(msgspec.DecodeError):
                    decoded = _data.decode(data)
                    row["orderId"] = decoded.get("orderId")
                    row["documentUrl"] = decoded.get("documentUrl")
                    row["projectedAt"] = decoded.get("projectedAt")
            rows.append(row)
        return rows

    def _stream_rows(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        if "partitions" in state:
            return [{"partition": n, **part} for n, part in enumerate(state["partitions"])]
        only = {name: state.get(name) for name in ("lag", "pending", "deadLetter")}
        return [{"partition": 0, "stream": self._partitions.spaces[0].triggers, **only}]

    async def _dead_letters(self) -> list[dict[str, Any]]:
        """The newest MAX_DEAD_LETTERS of every partition's dead letter, newest first."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for store in self._stores:
                pipe.xrevrange(store.dead_letter, count=MAX_DEAD_LETTERS)
            replies = await pipe.execute()
        found = []
        for partition, entries in enumerate(replies):
            for raw_id, fields in entries:
                entry_id = as_text(raw_id)
                body = describe(entry_id, fields)
                found.append((parse_id(entry_id), partition, body))
        found.sort(key=lambda item: item[0], reverse=True)
        rows = []
        for _order, partition, body in found[:MAX_DEAD_LETTERS]:
            raw = body.get("data")
            data: dict[str, Any] = raw if isinstance(raw, dict) else {}
            rows.append(
                {
                    "id": body["id"],
                    "partition": partition,
                    "reason": body.get("reason"),
                    "error": body.get("error"),
                    "deliveries": body.get("deliveries"),
                    "failedAt": body.get("failedAt"),
                    "type": body.get("type"),
                    # a trigger's entry names itself `id`, a display ack its `triggerId`
                    "triggerId": data.get("triggerId") or data.get("id"),
                    "screenId": data.get("screenId"),
                    "orderId": data.get("orderId"),
                    "userId": data.get("userId"),
                }
            )
        return rows

    # -- pushing changes ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Push changed sections every TICK_S (sooner after an action) while this edge holds
        an operator's socket; listen for resend requests from every edge."""
        listener = asyncio.create_task(self._listen(), name="operator-resends")
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                self._wake.clear()
                if self._sio.room_is_empty(ROOM):
                    self._sent.clear()
                    self._chart_until = None
                    continue
                try:
                    await self._push()
                except STORE_ERRORS as exc:
                    logger.warning("operator view not refreshed", extra={"error": repr(exc)})
                except Exception:
                    logger.exception("operator view not refreshed")
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _push(self) -> None:
        snapshot = await self.snapshot()
        changed: dict[str, Any] = {"at": snapshot.pop("at")}
        for name, value in snapshot.items():
            encoded = _json.encode(value)
            if self._sent.get(name) != encoded:
                self._sent[name] = encoded
                changed[name] = value
        points = self.chart.series(after=self._chart_until)
        if points:
            self._chart_until = points[-1]["t"]
            changed["chart"] = points
        await self._sio.emit("operator:update", changed, room=ROOM)

    async def on_subscribe(self, sid: str, *_args: Any) -> Ack:
        refused = self._admin(sid)
        if refused is not None:
            return refused
        try:
            snapshot = await self.snapshot()
        except STORE_ERRORS as exc:
            logger.warning("operator snapshot failed", extra={"error": repr(exc)})
            return _refused(ErrorCode.INTERNAL_ERROR, "the store did not answer")
        snapshot["chart"] = self.chart.series()
        snapshot["tickMs"] = int(TICK_S * 1000)
        await self._sio.enter_room(sid, ROOM)
        return {"success": True, "snapshot": snapshot}

    # -- actions --------------------------------------------------------------------------

    def _target(self, payload: Any) -> tuple[str, int | None] | Ack:
        entry_id = payload.get("id") if isinstance(payload, dict) else None
        partition = payload.get("partition") if isinstance(payload, dict) else None
        if not isinstance(entry_id, str):
            return _refused(ErrorCode.VALIDATION_ERROR, "id (a dead-letter entry id) is required")
        try:
            parse_id(entry_id)
        except ValueError:
            return _refused(ErrorCode.VALIDATION_ERROR, f"{entry_id[:64]!r} is not an entry id")
        if partition is not None and not (
            isinstance(partition, int) and 0 <= partition < len(self._stores)
        ):
            return _refused(ErrorCode.VALIDATION_ERROR, "no such partition")
        return entry_id, partition

    async def _find(self, entry_id: str, partition: int | None) -> tuple[int, Any] | None:
        chosen = [partition] if partition is not None else range(len(self._stores))
        for index in chosen:
            fields = await self._stores[index].get(entry_id)
            if fields is not None:
                return index, fields
        return None

    async def on_dead_letter(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        refused = self._admin(sid)
        if refused is not None:
            return refused
        target = self._target(payload)
        if isinstance(target, dict):
            return target
        found = await self._find(*target)
        if found is None:
            return _refused(ErrorCode.VALIDATION_ERROR, "no such dead-letter entry")
        partition, fields = found
        return {"success": True, "entry": {**describe(target[0], fields), "partition": partition}}

    async def on_redrive(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        refused = self._admin(sid)
        if refused is not None:
            return refused
        chosen: list[tuple[int, str]] = []
        if isinstance(payload, dict) and payload.get("all") is True:
            for index, store in enumerate(self._stores):
                last = await store.last_id()
                if last:
                    chosen += [(index, entry_id) async for entry_id, _ in store.entries(until=last)]
            chosen.sort(key=lambda item: parse_id(item[1]))
        else:
            target = self._target(payload)
            if isinstance(target, dict):
                return target
            found = await self._find(*target)
            if found is None:
                return _refused(ErrorCode.VALIDATION_ERROR, "no such dead-letter entry")
            chosen = [(found[0], target[0])]
        redriven, missing = [], 0
        for index, entry_id in chosen:
            new_id = await self._stores[index].redrive(entry_id)
            if new_id is None:
                missing += 1
                continue
            if self._fence is not None:
                await self._fence.hold(self._partitions.spaces[index], deadline_s=REDRIVE_FENCE_S)
            redriven.append({"id": entry_id, "partition": index, "entryId": new_id})
        connection = self._sessions.get(sid)
        logger.info(
            "dead letters redriven from the operator's page",
            extra={
                "count": len(redriven),
                "user_id": connection.claims.user_id if connection else None,
            },
        )
        self._wake.set()
        return {"success": True, "redriven": redriven, "missing": missing}

    async def on_resend(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        refused = self._admin(sid)
        if refused is not None:
            return refused
        screen = payload.get("screenId") if isinstance(payload, dict) else None
        if not isinstance(screen, str) or not screen or len(screen) > 256:
            return _refused(ErrorCode.VALIDATION_ERROR, "screenId is required")
        await self._redis.publish(self.channel, screen)
        return {"success": True}

    async def _listen(self) -> None:
        """Resend requests from any edge's operator page: this edge sends to its sockets."""
        failures = 0
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                failures = 0
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    screen = as_text(message["data"])
                    try:
                        await self._resend(screen)
                    except Exception:
                        logger.exception("display not re-sent", extra={"screen_id": screen})
            except STORE_ERRORS as exc:
                failures += 1
                logger.warning("operator resends: redis unavailable", extra={"error": repr(exc)})
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
            finally:
                with contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
