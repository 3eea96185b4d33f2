"""The edge's HTTP API (SPEC 5): `/health`, `/metrics`, `POST /api/auth/refresh`."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from observability.metrics import CONTENT_TYPE, Metrics
from services.edge.sessions import Sessions
from services.edge.tokens import TokenService, make_refresh_route
from services.keys import PROJECTOR_GROUP
from services.runtime.presence import read_presence, screens_seen
from streams.partitions import Partitions
from streams.values import as_text, now_ms

logger = logging.getLogger(__name__)

STREAM_STATE_TIMEOUT_S = 0.8
"""/health answers within 1 s (SPEC 5): its Redis reads get 0.8 s of it."""


class HttpApi:
    def __init__(
        self,
        *,
        redis: Redis,
        partitions: Partitions,
        sessions: Sessions,
        tokens: TokenService,
        metrics: Metrics,
    ) -> None:
        self._redis = redis
        self._partitions = partitions
        self._sessions = sessions
        self._metrics = metrics
        self._refresh = make_refresh_route(tokens)
        self._started = time.monotonic()

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            self._refresh,
        ]

    async def health(self, _request: Request) -> JSONResponse:
        acks = self._metrics.acks
        body: dict[str, Any] = {
            "status": "ok",
            "timestamp": now_ms(),
            "uptime": round(time.monotonic() - self._started, 3),
            "memory": _memory(),
            "connections": len(self._sessions.connections),
            "redis": "ok",
            "streams": {"lag": None, "pending": None, "deadLetter": None},
            "metrics": {
                "totalRequests": acks.total,
                "successCount": acks.success,
                "failureCount": acks.failure,
                "successRate": round(acks.success / acks.total, 4) if acks.total else 1.0,
                "errorBreakdown": dict(acks.errors),
            },
        }
        try:
            streams = await self.stream_state()
        except (RedisError, OSError, TimeoutError):
            body["status"] = "unavailable"
            body["redis"] = "unavailable"
            return JSONResponse(body, status_code=503)
        body["streams"] = streams
        return JSONResponse(body)

    async def prometheus(self, _request: Request) -> Response:
        try:
            await self.stream_state()
            await self._presence_state()
        except (RedisError, OSError, TimeoutError) as exc:
            # The gauges keep their last values; the rest of the scrape is still true.
            logger.warning("stream state not read for /metrics", extra={"error": repr(exc)})
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def stream_state(self) -> dict[str, Any]:
        """Lag, pending and dead-letter length, read once for /health and /metrics: the
        sums, and with several partitions each partition's under `partitions`."""
        spaces = self._partitions.spaces
        async with (
            asyncio.timeout(STREAM_STATE_TIMEOUT_S),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            for space in spaces:
                pipe.xinfo_groups(space.triggers)
                pipe.xlen(space.dead_letter)
            replies = await pipe.execute(raise_on_error=False)
        parts = [
            self._partition_state(space.triggers, space.dead_letter, groups, dead)
            for space, groups, dead in zip(spaces, replies[::2], replies[1::2], strict=True)
        ]
        state: dict[str, Any] = {
            name: None if any(p[name] is None for p in parts) else sum(p[name] for p in parts)
            for name in ("lag", "pending", "deadLetter")
        }
        if len(parts) > 1:
            state["partitions"] = parts
        return state

    async def _presence_state(self) -> None:
        """Who is alive, from the store (every edge's view is the same)."""
        root = self._partitions.root
        async with asyncio.timeout(STREAM_STATE_TIMEOUT_S):
            presence = await read_presence(self._redis, root)
            seen = await screens_seen(self._redis, root)
        self._metrics.alive.labels("edges").set(len(presence.edges))
        self._metrics.alive.labels("workers").set(len(presence.workers))
        self._metrics.screens_online.set(len(presence.screens))
        for screen, at_ms in seen.items():
            self._metrics.screen_last_seen.labels(screen).set(at_ms / 1000)

    def _partition_state(
        self, triggers: str, dead_letter: str, groups: object, dead: object
    ) -> dict[str, Any]:
        state: dict[str, Any] = {"stream": triggers, "lag": None, "pending": None}
        if isinstance(groups, list):
            for group in groups:
                if as_text(group["name"]) == PROJECTOR_GROUP:
                    state["lag"] = group.get("lag")
                    state["pending"] = group.get("pending")
        state["deadLetter"] = dead if isinstance(dead, int) else 0
        for gauge, value in (
            (self._metrics.stream_lag, state["lag"]),
            (self._metrics.stream_pending, state["pending"]),
        ):
            if value is not None:
                gauge.labels(triggers, PROJECTOR_GROUP).set(value)
        self._metrics.dead_letter_entries.labels(dead_letter).set(state["deadLetter"])
        return state


def _memory() -> dict[str, int]:
    try:
        with open("/proc/self/statm") as statm:
            pages = [int(x) for x in statm.read().split()[:2]]
    except OSError:
        return {}
    page = os.sysconf("SC_PAGE_SIZE")
    return {"rss": pages[1] * page, "vms": pages[0] * page}
