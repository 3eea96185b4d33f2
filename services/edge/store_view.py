"""What the operator's page shows, read from the store (`OperatorFeed`'s snapshot): the same
on every edge, since it is all in the store (presence, projections, dead letters, pairings).

Lists are bounded: `MAX_SCREENS` screens (online ones first, then those seen most recently)
with the true counts beside them, the newest `MAX_DEAD_LETTERS` dead letters of all partitions.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from redis.asyncio import Redis

from services.edge.http import HttpApi
from services.edge.pairing import PairingService
from services.keys import ProjectionField, screen_key
from services.runtime.presence import read_presence, screens_seen
from streams.dead_letter import describe
from streams.ids import parse_id
from streams.partitions import Partitions
from streams.values import as_text, now_ms

MAX_SCREENS = 1000
"""Screens listed; a chain with more needs a page with search (not yet)."""
MAX_DEAD_LETTERS = 100

_data = msgspec.json.Decoder(dict[str, Any])


class StoreView:
    def __init__(
        self, *, redis: Redis, partitions: Partitions, http: HttpApi, pairing: PairingService
    ) -> None:
        self._redis = redis
        self._partitions = partitions
        self._http = http
        self._pairing = pairing

    async def snapshot(self) -> dict[str, Any]:
        root = self._partitions.root
        now = now_ms()
        presence = await read_presence(self._redis, root, now=now, with_info=True)
        seen = await screens_seen(self._redis, root)
        streams = await self._http.stream_state()
        return {
            "at": now,
            "screens": await self._screens(presence.screens, seen),
            "screenCounts": {
                "known": len(set(presence.screens) | set(seen)),
                "online": len(presence.screens),
            },
            "edges": [
                {"id": edge, **presence.info.get(edge, {})} for edge in sorted(presence.edges)
            ],
            "workers": [
                {"id": worker, **presence.info.get(worker, {})}
                for worker in sorted(presence.workers)
            ],
            "streams": self._stream_rows(streams),
            "deadLetters": await self._dead_letters(),
            "approvals": await self._pairing.waiting(),
        }

    async def _screens(
        self, online: dict[str, dict[str, int]], seen: dict[str, int]
    ) -> list[dict[str, Any]]:
        # Online ones first: past MAX_SCREENS, the ones that went dark longest ago drop off.
        offline = sorted(set(seen) - set(online), key=lambda s: (-seen[s], s))
        ids = [*sorted(online), *offline][:MAX_SCREENS]
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
                # An online screen's lastSeen moves with every beat: not sent, so that the
                # section changes only when something an operator sees changes.
                "lastSeen": None if screen in online else seen.get(screen),
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
            for space in self._partitions.spaces:
                pipe.xrevrange(space.dead_letter, count=MAX_DEAD_LETTERS)
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


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
