"""The authenticated connections of one edge, and their tokens' lifetime on a live connection
(SPEC 4): `auth:expiring` 60 s before `exp`, `auth:expired` and a disconnect at `exp`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from observability.metrics import Metrics
from schemas.codes import ErrorCode
from services.edge.sio import EdgeServer
from services.edge.tokens import AccessClaims

logger = logging.getLogger(__name__)

EXPIRY_WARNING_S = 60
WATCH_INTERVAL_S = 0.5
"""How often tokens are checked: SPEC allows 2 s after `exp` for the disconnect."""


@dataclass(slots=True)
class Connection:
    claims: AccessClaims
    warned: bool = False
    """Whether `auth:expiring` was sent for the current token."""


class Sessions:
    """sid → the connection's verified claims; the `rd_connections` gauge follows it."""

    def __init__(self, *, sio: EdgeServer, metrics: Metrics) -> None:
        self._sio = sio
        self._metrics = metrics
        self.connections: dict[str, Connection] = {}

    def add(self, sid: str, claims: AccessClaims) -> Connection:
        connection = self.connections[sid] = Connection(claims)
        self._metrics.connections.labels(claims.role).inc()
        return connection

    def get(self, sid: str) -> Connection | None:
        return self.connections.get(sid)

    def forget(self, sid: str) -> None:
        connection = self.connections.pop(sid, None)
        if connection is not None:
            self._metrics.connections.labels(connection.claims.role).dec()

    def renew(self, connection: Connection, claims: AccessClaims) -> None:
        """A refreshed token: the connection lives until its new `exp`, warned anew."""
        connection.claims = claims
        connection.warned = False

    @staticmethod
    def inside_warning_window(claims: AccessClaims) -> bool:
        return time.time() >= claims.exp - EXPIRY_WARNING_S

    async def watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.time()
            for sid, connection in list(self.connections.items()):
                exp = connection.claims.exp
                if now >= exp:
                    self.forget(sid)
                    await self._expire(sid)
                elif not connection.warned and now >= exp - EXPIRY_WARNING_S:
                    connection.warned = True
                    # Many sockets can enter the window at once: no loop turn per socket.
                    await self._sio.emit_to(sid, "auth:expiring", {"expiresAt": exp})

    async def _expire(self, sid: str) -> None:
        try:
            await self._sio.emit("auth:expired", {"code": ErrorCode.TOKEN_EXPIRED.value}, to=sid)
            await self._sio.disconnect(sid)
        except Exception as exc:  # the socket went meanwhile; the watcher goes on regardless
            logger.info("expired connection already gone", extra={"error": repr(exc)})
