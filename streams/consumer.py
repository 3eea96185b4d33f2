"""The consumer-group runner: at-least-once delivery with reclaim, backoff and dead letter.

One `GroupConsumer` is one member of a consumer group. It

1. creates the group idempotently (at id `0`, so entries appended before any consumer ran are
   processed),
2. takes a stable consumer name (`ConsumerLease`) and first re-reads the entries it already
   holds from a previous life,
3. then reads new entries (`>`) in batches on its own blocking connection, and every
   `reclaim_interval` claims entries whose idle time has passed the backoff for their
   delivery count (`RETRY_BASE_MS * 2^(n-1)`, capped at `RETRY_MAX_MS`), its own failures
   included: retries live in the pending-entries list, never in process memory,
4. hands each batch to a `BatchHandler`, which returns what to commit and what failed, and
   commits the effects together with the XACK of every entry in one atomic step per batch,
5. dead-letters an entry that is poison, or that failed on its `max_deliveries`-th delivery,
   in that same commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.dead_letter import DeadLetterReason
from streams.lease import ConsumerLease
from streams.redis_errors import STORE_ERRORS, TRANSIENT_ERRORS, is_busygroup, is_nogroup
from streams.scripts import Script
from streams.values import as_text

logger = logging.getLogger(__name__)

C = TypeVar("C")

RECLAIM = Script("streams.lua", "reclaim.lua")
DELETE_IDLE_CONSUMER = Script("streams.lua", "delete_idle_consumer.lua")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of one entry; `deliveries` counts this one (1 on first delivery)."""

    id: str
    fields: dict[bytes, bytes]
    deliveries: int


@dataclass(frozen=True, slots=True)
class Failure:
    """An entry the handler could not process this time."""

    delivery: Delivery
    error: str
    poison: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry to move to the dead-letter stream in the batch's commit."""

    delivery: Delivery
    reason: DeadLetterReason
    error: str


@dataclass(slots=True)
class BatchResult(Generic[C]):
    commits: list[C] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class BatchHandler(Protocol[C]):
    async def process(self, batch: Sequence[Delivery]) -> BatchResult[C]:
        """Do the batch's work without writing; a failing entry becomes a `Failure`."""
        ...

    async def commit(self, commits: Sequence[C], dead: Sequence[DeadLetter]) -> None:
        """Write every effect and XACK every entry named, in one atomic step."""
        ...

    def paused(self) -> bool:
        """Whether new entries must not be taken now (e.g. while a circuit is open)."""
        ...

    async def wait_ready(self) -> None:
        """Return when `paused()` is over."""
        ...


@dataclass(slots=True)
class ConsumerStats:
    batches: int = 0
    entries: int = 0
    committed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    redeliveries: int = 0


def backoff_ms(deliveries: int, base_ms: int, cap_ms: int) -> int:
    """Idle time after which an entry delivered `deliveries` times is retried."""
    return int(min(base_ms * 2 ** max(deliveries - 1, 0), cap_ms))


class GroupConsumer(Generic[C]):
    """One member of a consumer group on one stream; see the module docstring."""

    def __init__(
        self,
        *,
        redis: Redis,
        blocking_redis: Redis,
        stream: str,
        group: str,
        lease: ConsumerLease,
        handler: BatchHandler[C],
        max_deliveries: int,
        retry_base_ms: int,
        retry_max_ms: int,
        batch_size: int = 256,
        janitor_interval_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._blocking = blocking_redis
        self.stream = stream
        self.group = group
        self._lease = lease
        self._handler = handler
        self.max_deliveries = max_deliveries
        self.retry_base_ms = retry_base_ms
        self.retry_max_ms = retry_max_ms
        self.batch_size = batch_size
        self._janitor_interval_s = janitor_interval_s
        # A retry must start within RETRY_BASE_MS/2 of its backoff expiring.
        self.reclaim_interval_s = min(max(retry_base_ms / 4, 5), 1000) / 1000
        self.stats = ConsumerStats()
        self.ready = asyncio.Event()

    @property
    def name(self) -> str:
        return self._lease.name

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except RedisError as exc:
            if not is_busygroup(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the batch in hand is finished first."""
        await self.ensure_group()
        await self._lease.acquire()
        # Visible at once (Redis 7.0 creates a consumer only when a read returns entries).
        await self._redis.xgroup_createconsumer(self.stream, self.group, self.name)
        logger.info(
            "consumer started",
            extra={"stream": self.stream, "group": self.group, "consumer": self.name},
        )
        housekeeping = asyncio.create_task(self._housekeeping(stop), name="consumer-housekeeping")
        try:
            await self._drain_own_pending(stop)
            self.ready.set()
            await self._loop(stop)
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            # Best effort: the lease expires by itself. The client may be half-closed by a
            # failover or a cancellation, and raise anything.
            with contextlib.suppress(Exception):
                await self._lease.release()
            logger.info("consumer stopped", extra={"consumer": self.name})

    async def _drain_own_pending(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self._claim(own=True)
            if batch:
                await self._process(batch)
            if len(batch) < self.batch_size:
                return

    async def _loop(self, stop: asyncio.Event) -> None:
        next_reclaim = 0.0
        failures = 0
        while not stop.is_set():
            try:
                if self._handler.paused():
                    await self._wait_ready(stop)
                    continue
                now = time.monotonic()
                if now >= next_reclaim:
                    batch = await self._claim(own=False)
                    if len(batch) < self.batch_size:
                        next_reclaim = now + self.reclaim_interval_s
                    if batch:
                        await self._process(batch)
                        continue
                block_s = max(next_reclaim - time.monotonic(), 0.001)
                batch = await self._read_new(block_ms=int(block_s * 1000) or 1)
                if batch:
                    await self._process(batch)
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                logger.warning(
                    "redis unavailable; consumer retries",
                    extra={"consumer": self.name, "error": str(exc), "retry_in_s": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            except RedisError as exc:
                if not is_nogroup(exc):
                    raise
                logger.warning("consumer group vanished; creating it again")
                await self.ensure_group()

    async def _wait_ready(self, stop: asyncio.Event) -> None:
        logger.warning("consumer paused by its handler", extra={"consumer": self.name})
        waiters = {
            asyncio.ensure_future(self._handler.wait_ready()),
            asyncio.ensure_future(stop.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        logger.info("consumer resumed", extra={"consumer": self.name})

    async def _read_new(self, *, block_ms: int) -> list[Delivery]:
        reply: Any = await self._blocking.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.batch_size, block=block_ms
        )
        if not reply:
            return []
        _stream, entries = reply[0]
        return [Delivery(as_text(i), fields, 1) for i, fields in entries if fields is not None]

    async def _claim(self, *, own: bool) -> list[Delivery]:
        flat = await RECLAIM(
            self._redis,
            keys=[self.stream],
            args=[
                self.group,
                self.name,
                self.retry_base_ms,
                self.retry_max_ms,
                self.batch_size,
                self.name if own else "",
            ],
        )
        out: list[Delivery] = []
        for i in range(0, len(flat), 3):
            raw = flat[i + 1]
            fields = dict(zip(raw[::2], raw[1::2], strict=True))
            out.append(Delivery(as_text(flat[i]), fields, int(flat[i + 2])))
        return out

    async def _process(self, batch: list[Delivery]) -> None:
        self.stats.batches += 1
        self.stats.entries += len(batch)
        self.stats.redeliveries += sum(1 for d in batch if d.deliveries > 1)
        try:
            result = await self._handler.process(batch)
        except Exception as exc:
            # A bug in the handler must not stop the consumer: the batch is retried and,
            # if it keeps failing, dead-lettered with the error.
            logger.exception("batch handler failed", extra={"consumer": self.name})
            result = BatchResult(failures=[Failure(d, f"handler error: {exc!r}") for d in batch])
        dead: list[DeadLetter] = []
        for failure in result.failures:
            d = failure.delivery
            if failure.poison:
                dead.append(DeadLetter(d, DeadLetterReason.POISON, failure.error))
            elif d.deliveries >= self.max_deliveries:
                dead.append(DeadLetter(d, DeadLetterReason.MAX_DELIVERIES, failure.error))
            else:
                self.stats.retried += 1
                logger.info(
                    "entry failed; will retry",
                    extra={
                        "entry_id": d.id,
                        "deliveries": d.deliveries,
                        "retry_in_ms": backoff_ms(
                            d.deliveries, self.retry_base_ms, self.retry_max_ms
                        ),
                        "error": failure.error,
                    },
                )
        if result.commits or dead:
            await self._handler.commit(result.commits, dead)
            self.stats.committed += len(result.commits)
            self.stats.dead_lettered += len(dead)
            for item in dead:
                logger.warning(
                    "entry dead-lettered",
                    extra={
                        "entry_id": item.delivery.id,
                        "reason": item.reason.value,
                        "deliveries": item.delivery.deliveries,
                        "error": item.error,
                    },
                )

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        renew_every = self._lease.ttl_ms / 3000
        next_janitor = time.monotonic() + self._janitor_interval_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), renew_every)
            if stop.is_set():
                return
            try:
                await self._lease.renew()
                if time.monotonic() >= next_janitor:
                    next_janitor = time.monotonic() + self._janitor_interval_s
                    await self.remove_dead_consumers()
            except STORE_ERRORS as exc:
                logger.warning("consumer housekeeping failed", extra={"error": str(exc)})

    async def remove_dead_consumers(self) -> list[str]:
        """Delete consumers that hold no lease and no pending entries."""
        removed: list[str] = []
        for info in await self._redis.xinfo_consumers(self.stream, self.group):
            name = as_text(info["name"])
            if name == self.name or int(info["pending"]) > 0:
                continue
            # DELCONSUMER drops the consumer's pending entries, so the check and the delete
            # are one atomic step: a consumer that took an entry meanwhile is kept.
            if await DELETE_IDLE_CONSUMER(
                self._redis, keys=[self.stream, self._lease.key_for(name)], args=[self.group, name]
            ):
                removed.append(name)
        if removed:
            logger.info("removed idle consumers", extra={"consumers": removed})
        return removed
