"""Wiring of one worker: Redis clients, order resolver, projector and consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from observability.metrics import Metrics
from schemas.errors import ConfigError
from services.config.settings import Settings
from services.config.store import detect_store
from services.keys import PROJECTOR_GROUP
from services.runtime.presence import Heartbeat, member
from services.worker.commit import Op
from services.worker.orders import OrderResolver, build_resolver
from services.worker.projector import Projector
from streams.connections import redis_client
from streams.consumer import GroupConsumer
from streams.lease import ConsumerLease
from streams.partitions import open_partitions
from streams.values import now_ms

logger = logging.getLogger(__name__)


@dataclass
class Lane:
    """One partition's consumer and its projector."""

    consumer: GroupConsumer[Op]
    projector: Projector


@dataclass
class Worker:
    """A worker's lanes, one per partition it serves, each with its own blocking reader: a
    busy partition cannot starve the others (every read takes at most `batch_size`)."""

    lanes: list[Lane]
    resolver: OrderResolver
    heartbeat: Heartbeat | None = None
    """The worker's presence (issue 16), beaten while it runs."""

    @property
    def consumer(self) -> GroupConsumer[Op]:
        """The one consumer of a worker on a single partition."""
        return self._single().consumer

    @property
    def projector(self) -> Projector:
        return self._single().projector

    def _single(self) -> Lane:
        if len(self.lanes) != 1:
            msg = f"this worker serves {len(self.lanes)} partitions; use .lanes"
            raise ValueError(msg)
        return self.lanes[0]

    @property
    def ready(self) -> bool:
        return all(lane.consumer.ready.is_set() for lane in self.lanes)

    @property
    def committed(self) -> int:
        return sum(lane.consumer.stats.committed for lane in self.lanes)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every lane until `stop` is set; a lane that fails stops the others."""
        async with asyncio.TaskGroup() as group:
            if self.heartbeat is not None:
                group.create_task(self.heartbeat.run(stop), name="worker-presence")
            for lane in self.lanes:
                group.create_task(lane.consumer.run(stop), name=f"consumer {lane.consumer.stream}")


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings,
    *,
    consumer_base: str | None = None,
    batch_size: int = 256,
    partitions: Sequence[int] | None = None,
    tracer: Tracer | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Worker]:
    """Build a worker for the given partitions (all by default); everything it opens is
    closed on exit."""
    url = settings.redis_url
    if url is None:
        msg = "the worker needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    settings = await detect_store(settings)
    cluster = bool(settings.redis_cluster)
    redis = redis_client(url, cluster=cluster)
    blocking: list[Redis] = []
    resolver = build_resolver(settings, tracer=tracer, metrics=metrics)
    try:
        layout = await open_partitions(
            redis, settings.stream_prefix, settings.stream_partitions, cluster=cluster
        )
        chosen = range(layout.count) if partitions is None else partitions
        lanes: list[Lane] = []
        for index in chosen:
            if not 0 <= index < layout.count:
                msg = f"partition {index} does not exist (STREAM_PARTITIONS={layout.count})"
                raise ConfigError(msg)
            space = layout.spaces[index]
            projector = Projector(
                redis=redis,
                keyspace=space,
                resolver=resolver,
                group=PROJECTOR_GROUP,
                maxlen=settings.stream_maxlen,
                tracer=tracer,
                metrics=metrics,
            )
            lease = ConsumerLease(
                redis=redis,
                keyspace=space,
                group=PROJECTOR_GROUP,
                base=consumer_base or socket.gethostname(),
            )
            blocking.append(redis_client(url, blocking=True, cluster=cluster))
            consumer: GroupConsumer[Op] = GroupConsumer(
                redis=redis,
                blocking_redis=blocking[-1],
                stream=space.triggers,
                group=PROJECTOR_GROUP,
                lease=lease,
                handler=projector,
                max_deliveries=settings.max_deliveries,
                retry_base_ms=settings.retry_base_ms,
                retry_max_ms=settings.retry_max_ms,
                batch_size=batch_size,
            )
            lanes.append(Lane(consumer=consumer, projector=projector))
        worker_id = f"{consumer_base or socket.gethostname()}-{os.getpid()}"
        started_at = now_ms()
        served = list(chosen)

        def about() -> dict[str, dict[str, object]]:
            breaker = getattr(resolver, "breaker", None)
            circuits = {breaker.name: breaker.state.name.lower()} if breaker is not None else {}
            return {
                worker_id: {"startedAt": started_at, "partitions": served, "circuits": circuits}
            }

        beat = Heartbeat(redis, layout.root, lambda: {"workers": [member(worker_id)]}, info=about)
        yield Worker(lanes=lanes, resolver=resolver, heartbeat=beat)
    finally:
        await resolver.close()
        for client in blocking:
            await client.aclose()
        await redis.aclose()


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event,
    consumer_base: str | None = None,
    partitions: Sequence[int] | None = None,
    tracer: Tracer | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run one worker until `stop` is set."""
    async with open_worker(
        settings,
        consumer_base=consumer_base,
        partitions=partitions,
        tracer=tracer,
        metrics=metrics,
    ) as worker:
        await worker.run(stop)
