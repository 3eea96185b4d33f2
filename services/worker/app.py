"""Wiring of one worker: Redis clients, order resolver, projector and consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from opentelemetry.trace import Tracer

from observability.metrics import Metrics
from schemas.errors import ConfigError
from services.config.settings import Settings
from services.keys import PROJECTOR_GROUP
from services.worker.commit import Op
from services.worker.orders import OrderResolver, build_resolver
from services.worker.projector import Projector
from streams.connections import redis_client
from streams.consumer import GroupConsumer
from streams.keys import Keyspace
from streams.lease import ConsumerLease

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    consumer: GroupConsumer[Op]
    projector: Projector
    resolver: OrderResolver


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings,
    *,
    consumer_base: str | None = None,
    batch_size: int = 256,
    tracer: Tracer | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Worker]:
    """Build a worker; everything it opens is closed on exit."""
    if settings.redis_url is None:
        msg = "the worker needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    redis = redis_client(settings.redis_url)
    blocking = redis_client(settings.redis_url, blocking=True)
    resolver = build_resolver(settings, tracer=tracer, metrics=metrics)
    keyspace = Keyspace(settings.stream_prefix)
    try:
        projector = Projector(
            redis=redis,
            keyspace=keyspace,
            resolver=resolver,
            group=PROJECTOR_GROUP,
            maxlen=settings.stream_maxlen,
            tracer=tracer,
            metrics=metrics,
        )
        lease = ConsumerLease(
            redis=redis,
            keyspace=keyspace,
            group=PROJECTOR_GROUP,
            base=consumer_base or socket.gethostname(),
        )
        consumer: GroupConsumer[Op] = GroupConsumer(
            redis=redis,
            blocking_redis=blocking,
            stream=keyspace.triggers,
            group=PROJECTOR_GROUP,
            lease=lease,
            handler=projector,
            max_deliveries=settings.max_deliveries,
            retry_base_ms=settings.retry_base_ms,
            retry_max_ms=settings.retry_max_ms,
            batch_size=batch_size,
        )
        yield Worker(consumer=consumer, projector=projector, resolver=resolver)
    finally:
        await resolver.close()
        await blocking.aclose()
        await redis.aclose()


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event,
    consumer_base: str | None = None,
    tracer: Tracer | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run one worker until `stop` is set."""
    async with open_worker(
        settings, consumer_base=consumer_base, tracer=tracer, metrics=metrics
    ) as worker:
        await worker.consumer.run(stop)
