"""The edge: Starlette HTTP API and Socket.IO on one ASGI app, built by `create_app`.

`create_app` builds the whole object graph (no I/O: Redis clients connect on first use); the
lifespan starts the edge's tasks (the events reader, display resends, the expiry watcher),
yields the typed state, and on shutdown stops the tasks and closes what the factory opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from typing import TypedDict

import socketio
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.types import ASGIApp

from observability.metrics import Metrics
from observability.tracing import Telemetry, disabled
from schemas.errors import ConfigError
from services.config.jwt_keys import resolve_secrets
from services.config.settings import Settings
from services.edge.chart import Chart
from services.edge.desk import TriggerDesk
from services.edge.displays import DisplayDispatcher
from services.edge.documents import Documents
from services.edge.events import EventsReader
from services.edge.guard import EngineIOGuard
from services.edge.handlers import SocketHandlers
from services.edge.headers import SecurityHeaders
from services.edge.http import HttpApi
from services.edge.operator import OperatorFeed
from services.edge.pairing import PairingService, make_pairing_routes
from services.edge.presence import EdgePresence
from services.edge.sessions import Connection, Sessions
from services.edge.sio import EdgeServer
from services.edge.tokens import TokenService
from services.edge.web.demo import make_demo_route
from services.edge.web.pages import WebPages
from streams.batcher import PipelineBatcher
from streams.connections import redis_client
from streams.fence import ReplicaFence
from streams.partitions import Partitions, open_partitions
from streams.store import StreamStore

logger = logging.getLogger(__name__)

MAX_PACKET_BYTES = 64 * 1024
SHUTDOWN_WAIT_S = 2.0


class EdgeState(TypedDict):
    """What the lifespan yields to Starlette (`request.state.edge`)."""

    edge: Edge


class Edge:
    """Everything one edge process owns, wired together; the lifespan runs it."""

    def __init__(
        self,
        settings: Settings,
        *,
        telemetry: Telemetry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if settings.redis_url is None:
            msg = "the edge needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
            raise ConfigError(msg)
        self.settings = settings
        self.telemetry = telemetry or disabled()
        self.metrics = metrics or Metrics()
        self.edge_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.partitions = partitions = Partitions.of(
            settings.stream_prefix, settings.stream_partitions
        )
        self.keyspace = keyspace = partitions.root
        tracer = self.telemetry.tracer
        self.cluster = cluster = bool(settings.redis_cluster)
        self.redis = redis = redis_client(settings.redis_url, cluster=cluster)
        self.sio = sio = EdgeServer(max_packet_bytes=MAX_PACKET_BYTES)
        self.sessions = Sessions(sio=sio, metrics=self.metrics)
        self.presence = EdgePresence(
            redis=redis, root=keyspace, edge_id=self.edge_id, sessions=self.sessions
        )
        self.tokens = TokenService(
            secrets=resolve_secrets(settings), redis=redis, keyspace=keyspace, cluster=cluster
        )
        self.pairing = PairingService(redis=redis, keyspace=keyspace, tokens=self.tokens)
        self.batcher = batcher = PipelineBatcher(redis)
        self.fence = ReplicaFence(redis, replicas=settings.redis_wait_replicas, owner=self.edge_id)
        self.desk = TriggerDesk(
            redis=redis,
            partitions=partitions,
            settings=settings,
            edge_id=self.edge_id,
            batcher=batcher,
            tracer=tracer,
            cluster=cluster,
            fence=self.fence,
        )
        self.displays = DisplayDispatcher(
            sio=sio,
            store=StreamStore(redis=redis, maxlen=settings.stream_maxlen, batcher=batcher),
            triggers_stream=lambda screen_id: partitions.for_screen(screen_id).triggers,
            tracer=tracer,
        )
        # One XREAD over every partition's events; on a cluster one reader per partition
        # (an XREAD's streams must share a slot), each on connections of its own.
        self.chart = Chart()
        groups = [[space] for space in partitions.spaces] if cluster else [list(partitions.spaces)]
        self.reader_clients = [
            redis_client(settings.redis_url, blocking=True, cluster=cluster) for _ in groups
        ]
        self.readers = [
            EventsReader(
                redis=redis,
                blocking=blocking,
                spaces=spaces,
                sio=sio,
                desk=self.desk,
                displays=self.displays,
                telemetry=self.telemetry,
                metrics=self.metrics,
                fence=self.fence,
                chart=self.chart,
            )
            for blocking, spaces in zip(self.reader_clients, groups, strict=True)
        ]
        handlers = SocketHandlers(
            settings=settings,
            sio=sio,
            sessions=self.sessions,
            tokens=self.tokens,
            desk=self.desk,
            displays=self.displays,
            redis=redis,
            batcher=batcher,
            partitions=partitions,
            metrics=self.metrics,
            fence=self.fence,
            presence=self.presence,
        )
        handlers.register()
        self.http = HttpApi(
            redis=redis,
            partitions=partitions,
            sessions=self.sessions,
            tokens=self.tokens,
            metrics=self.metrics,
        )
        self.operator = OperatorFeed(
            sio=sio,
            sessions=self.sessions,
            redis=redis,
            partitions=partitions,
            http=self.http,
            pairing=self.pairing,
            resend=handlers.resend_current,
            maxlen=settings.stream_maxlen,
            fence=self.fence if self.fence.enabled else None,
            chart=self.chart,
        )
        self.operator.register()

    @property
    def connections(self) -> dict[str, Connection]:
        return self.sessions.connections

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[EdgeState]:
        stop = asyncio.Event()
        try:
            await open_partitions(
                self.redis,
                self.settings.stream_prefix,
                self.partitions.count,
                cluster=self.cluster,
            )
            starts = [await reader.last_event_ids() for reader in self.readers]
        except BaseException:
            await self._close_clients()
            raise
        tasks = [
            *(
                asyncio.create_task(reader.run(start), name=f"edge-events-{index}")
                for index, (reader, start) in enumerate(zip(self.readers, starts, strict=True))
            ),
            asyncio.create_task(self.displays.run_resends(stop), name="edge-resends"),
            asyncio.create_task(self.sessions.watch_expiry(), name="edge-expiry"),
            asyncio.create_task(self.presence.run(stop), name="edge-presence"),
            asyncio.create_task(self.operator.run(stop), name="edge-operator"),
        ]
        logger.info("edge started", extra={"edge_id": self.edge_id})
        try:
            yield {"edge": self}
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            # Bounded: SIGTERM must end the process within 10 s. A task cancelled inside a
            # redis-py read has been seen to stay "cancelling"; closing the clients below
            # breaks its read, and it is not waited for again.
            _done, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
            if stuck:
                logger.warning(
                    "edge tasks did not stop in time",
                    extra={"tasks": sorted(task.get_name() for task in stuck)},
                )
            await self._close_clients()
            logger.info("edge stopped", extra={"edge_id": self.edge_id})

    async def _close_clients(self) -> None:
        for client in (*self.reader_clients, self.redis):
            try:
                await asyncio.wait_for(client.aclose(), SHUTDOWN_WAIT_S)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("redis client not closed cleanly", extra={"error": repr(exc)})


def create_app(
    settings: Settings, *, telemetry: Telemetry | None = None, metrics: Metrics | None = None
) -> ASGIApp:
    """The edge's ASGI app: Socket.IO (at /socket.io) and the HTTP API on one port."""
    edge = Edge(settings, telemetry=telemetry, metrics=metrics)
    routes = [
        *edge.http.routes(),
        *make_pairing_routes(edge.pairing, edge.tokens),
        *WebPages(settings, edge_id=edge.edge_id).routes(),
    ]
    if settings.documents_dir is not None:
        routes.append(Documents(settings.documents_dir).route())
    if settings.app_env == "development":
        routes.append(make_demo_route(settings, edge.tokens))
    http = Starlette(routes=routes, lifespan=edge.lifespan)
    app: ASGIApp = SecurityHeaders(
        EngineIOGuard(socketio.ASGIApp(edge.sio, other_asgi_app=http), max_bytes=MAX_PACKET_BYTES)
    )
    app.edge = edge  # type: ignore[attr-defined]  # tests and `serve` reach the edge here
    return app
