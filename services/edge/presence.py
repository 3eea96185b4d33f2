"""The edge's heartbeat (issue 16): itself and the screens connected to it, renewed every
`BEAT_S` (`services/runtime/presence.py`), so a screen is online across all edges while any
edge holding it lives, and offline within `TTL_MS` of that edge's crash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from services.edge.sessions import Sessions
from services.runtime.presence import Heartbeat, member
from streams.keys import Keyspace
from streams.redis_errors import STORE_ERRORS
from streams.values import now_ms

logger = logging.getLogger(__name__)


class EdgePresence:
    def __init__(self, *, redis: Redis, root: Keyspace, edge_id: str, sessions: Sessions) -> None:
        self._edge_id = edge_id
        self._sessions = sessions
        self._started_at = now_ms()
        self.heartbeat = Heartbeat(redis, root, self._members, seen=self._screens, info=self._about)

    def _about(self) -> dict[str, dict[str, object]]:
        """What the operator's page shows of this edge (`Presence.info`)."""
        connections = self._sessions.connections
        return {
            self._edge_id: {
                "startedAt": self._started_at,
                "connections": len(connections),
                "screens": len(self._screens()),
            }
        }

    def _screens(self) -> set[str]:
        return {
            connection.claims.screen_id
            for connection in self._sessions.connections.values()
            if connection.claims.role == "screen"
        }

    def _members(self) -> dict[str, Iterable[str]]:
        return {
            "edges": [member(self._edge_id)],
            "screens": [member(screen, self._edge_id) for screen in self._screens()],
        }

    async def arrived(self, screen_id: str) -> None:
        """A screen's socket was accepted here (its token verified): online at once."""
        try:
            await self.heartbeat.add("screens", member(screen_id, self._edge_id), seen=screen_id)
        except STORE_ERRORS as exc:  # the next beat adds it
            logger.warning("screen presence not written", extra={"error": repr(exc)})

    async def left(self, screen_id: str) -> None:
        """A socket of the screen closed: offline at once unless another socket holds it."""
        if screen_id in self._screens():
            return
        try:
            await self.heartbeat.remove(
                "screens", [member(screen_id, self._edge_id)], seen=screen_id
            )
        except STORE_ERRORS as exc:  # it expires by itself
            logger.warning("screen presence not removed", extra={"error": repr(exc)})

    async def run(self, stop: asyncio.Event) -> None:
        await self.heartbeat.run(stop)
