"""The operator's live feed (SPEC 10 `/operator`, issue 16), over the page's Socket.IO connection.

An admin's socket sends `operator:subscribe` and gets a snapshot of the whole store: every known
screen (online across all edges, what it shows, its last display ack), live edges and workers
(with their age and circuits, from their heartbeats' info), each partition's lag, pending and
dead-letter count, the newest dead letters, the pairings waiting for approval, and the chart.
(`store_view.py` reads it). It is then in room `operator`, and every `TICK_S` while that room
holds a socket on this edge, the sections that changed are pushed as `operator:update` (the
Socket.IO Admin UI's pattern: a snapshot, then changes). A page that reconnects subscribes
again: a fresh snapshot.

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
from schemas.wire import failure_ack
from services.edge.chart import Chart
from services.edge.http import HttpApi
from services.edge.pairing import PairingService
from services.edge.sessions import Sessions
from services.edge.sio import EdgeServer
from services.edge.store_view import StoreView
from streams.dead_letter import describe, locate, stores_of
from streams.fence import ReplicaFence
from streams.ids import parse_id
from streams.partitions import Partitions
from streams.redis_errors import STORE_ERRORS
from streams.values import as_text

logger = logging.getLogger(__name__)

ROOM = "operator"
TICK_S = 2.0
REDRIVE_FENCE_S = 10.0
REDRIVE_ALL_MAX = 500
"""Entries one "redrive all" call moves; the answer says how many remain (the page asks again)."""
CHART_TRAILING_S = 10

Ack = dict[str, Any]
_json = msgspec.json.Encoder()


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
        self._resend = resend
        self._fence = fence
        self.chart = chart or Chart()
        self._stores = stores_of(redis, partitions.spaces, maxlen)
        self.view = StoreView(redis=redis, partitions=partitions, http=http, pairing=pairing)
        self.channel = partitions.root.key("operator", "resend")
        self._sent: dict[str, bytes] = {}
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
            return failure_ack(None, ErrorCode.TOKEN_EXPIRED, "token expired")
        if connection.claims.role != "admin":
            return failure_ack(None, ErrorCode.FORBIDDEN, "the operator's view is for admins")
        return None

    # -- pushing changes ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Push changed sections every TICK_S (sooner after an action) while this edge holds
        an operator's socket; listen for resend requests from every edge."""
        listener = asyncio.create_task(self._listen(stop), name="operator-resends")
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                self._wake.clear()
                if self._sio.room_is_empty(ROOM):
                    self._sent.clear()
                    continue
                try:
                    await self._push()
                except STORE_ERRORS as exc:
                    logger.warning("operator view not refreshed", extra={"error": repr(exc)})
                except Exception:
                    logger.exception("operator view not refreshed")
        finally:
            listener.cancel()
            # Bounded: a redis-py read has been seen to swallow a cancellation (app.py).
            await asyncio.wait([listener], timeout=1.0)

    async def _push(self) -> None:
        snapshot = await self.view.snapshot()
        changed: dict[str, Any] = {"at": snapshot.pop("at")}
        for name, value in snapshot.items():
            encoded = _json.encode(value)
            if self._sent.get(name) != encoded:
                self._sent[name] = encoded
                changed[name] = value
        # The last seconds again each tick: an event that arrives late (the reader behind, a
        # clock apart) still lands in its second. The page replaces points by their `t`.
        changed["chart"] = self.chart.series()[-CHART_TRAILING_S:]
        await self._sio.emit("operator:update", changed, room=ROOM)

    async def on_subscribe(self, sid: str, *_args: Any) -> Ack:
        refused = self._admin(sid)
        if refused is not None:
            return refused
        await self._sio.enter_room(sid, ROOM)
        try:
            snapshot = await self.view.snapshot()
        except STORE_ERRORS as exc:
            await self._sio.leave_room(sid, ROOM)
            logger.warning("operator snapshot failed", extra={"error": repr(exc)})
            return failure_ack(None, ErrorCode.INTERNAL_ERROR, "the store did not answer")
        snapshot["chart"] = self.chart.series()
        snapshot["tickMs"] = int(TICK_S * 1000)
        # A push may have read newer state while this snapshot was read: the next push sends
        # every section again, after this answer (a socket's packets keep their order).
        self._sent.clear()
        return {"success": True, "snapshot": snapshot}

    # -- actions --------------------------------------------------------------------------

    async def _act(self, sid: str, name: str, action: Callable[[], Awaitable[Ack]]) -> Ack:
        """An admin's action, answered whatever happens (an unanswered call waits for its
        timeout in the page)."""
        refused = self._admin(sid)
        if refused is not None:
            return refused
        try:
            return await action()
        except STORE_ERRORS as exc:
            logger.warning("operator action failed", extra={"action": name, "error": repr(exc)})
            return failure_ack(
                None, ErrorCode.INTERNAL_ERROR, "the store did not answer; try again"
            )
        except Exception:
            logger.exception("operator action failed", extra={"action": name})
            return failure_ack(None, ErrorCode.INTERNAL_ERROR, "internal error")

    async def _located(self, payload: Any) -> tuple[int, str, dict[bytes, bytes]] | Ack:
        """The partition, id and fields of the dead letter `{id, partition?}` names, or the
        refusal: a bad id, no such entry, or an id two partitions hold without `partition`."""
        entry_id = payload.get("id") if isinstance(payload, dict) else None
        partition = payload.get("partition") if isinstance(payload, dict) else None
        if not isinstance(entry_id, str):
            return failure_ack(
                None, ErrorCode.VALIDATION_ERROR, "id (a dead-letter entry id) is required"
            )
        try:
            parse_id(entry_id)
        except ValueError:
            return failure_ack(
                None, ErrorCode.VALIDATION_ERROR, f"{entry_id[:64]!r} is not an entry id"
            )
        if partition is not None and not (
            isinstance(partition, int) and 0 <= partition < len(self._stores)
        ):
            return failure_ack(None, ErrorCode.VALIDATION_ERROR, "no such partition")
        found = await locate(self._stores, entry_id, partition)
        if not found:
            return failure_ack(None, ErrorCode.VALIDATION_ERROR, "no such dead-letter entry")
        if len(found) > 1:
            names = " and ".join(str(index) for index, _, _ in found)
            msg = f"{entry_id} is in partitions {names}: name the partition"
            return failure_ack(None, ErrorCode.VALIDATION_ERROR, msg)
        index, _store, fields = found[0]
        return index, entry_id, fields

    async def on_dead_letter(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        async def show() -> Ack:
            found = await self._located(payload)
            if isinstance(found, dict):
                return found
            partition, entry_id, fields = found
            return {
                "success": True,
                "entry": {**describe(entry_id, fields), "partition": partition},
            }

        return await self._act(sid, "dead-letter", show)

    async def on_redrive(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        async def redrive() -> Ack:
            if isinstance(payload, dict) and payload.get("all") is True:
                chosen, remaining = await self._oldest(REDRIVE_ALL_MAX)
            else:
                found = await self._located(payload)
                if isinstance(found, dict):
                    return found
                chosen, remaining = [found[:2]], 0
            return await self._redrive(sid, chosen, remaining)

        return await self._act(sid, "redrive", redrive)

    async def _oldest(self, limit: int) -> tuple[list[tuple[int, str]], int]:
        """Up to `limit` dead letters of every partition, oldest first, and how many more."""
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip
            for store in self._stores:
                pipe.xlen(store.dead_letter)
                pipe.xrange(store.dead_letter, count=limit)
            replies = await pipe.execute()
        total = sum(int(length) for length in replies[::2])
        chosen = [
            (index, as_text(raw_id))
            for index, found in enumerate(replies[1::2])
            for raw_id, _fields in found
        ]
        chosen.sort(key=lambda item: parse_id(item[1]))
        return chosen[:limit], max(0, total - limit)

    async def _redrive(self, sid: str, chosen: list[tuple[int, str]], remaining: int) -> Ack:
        redriven: list[dict[str, Any]] = []
        missing = 0
        try:
            for index, entry_id in chosen:
                new_id = await self._stores[index].redrive(entry_id)
                if new_id is None:
                    missing += 1  # another redrive (or a purge) took it
                else:
                    redriven.append({"id": entry_id, "partition": index, "entryId": new_id})
            if self._fence is not None:  # REDIS_WAIT_REPLICAS: said only once replicated
                for index in sorted({r["partition"] for r in redriven}):
                    space = self._partitions.spaces[index]
                    await self._fence.hold(space, deadline_s=REDRIVE_FENCE_S)
        finally:
            connection = self._sessions.get(sid)
            logger.info(
                "dead letters redriven from the operator's page",
                extra={
                    "count": len(redriven),
                    "user_id": connection.claims.user_id if connection else None,
                },
            )
            self._wake.set()
        return {"success": True, "redriven": redriven, "missing": missing, "remaining": remaining}

    async def on_resend(self, sid: str, payload: Any = None, *_extra: Any) -> Ack:
        async def resend() -> Ack:
            screen = payload.get("screenId") if isinstance(payload, dict) else None
            if not isinstance(screen, str) or not screen or len(screen) > 256:
                return failure_ack(None, ErrorCode.VALIDATION_ERROR, "screenId is required")
            await self._redis.publish(self.channel, screen)
            return {"success": True}

        return await self._act(sid, "resend", resend)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Resend requests from any edge's operator page: this edge sends to its sockets.
        Until `stop`, or cancelled: a cancellation redis-py turned into a connection error
        still ends it (`cancelling()`), else the process could not exit."""
        failures = 0
        task = asyncio.current_task()
        while not stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    failures = 0  # this subscription works
                    if message.get("type") != "message":
                        continue
                    screen = as_text(message["data"])
                    try:
                        await self._resend(screen)
                    except Exception:
                        logger.exception("display not re-sent", extra={"screen_id": screen})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store, or the library: listen again, never stop
                if stop.is_set() or (task is not None and task.cancelling()):
                    return
                failures += 1
                logger.warning("operator resends: not listening", extra={"error": repr(exc)})
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
