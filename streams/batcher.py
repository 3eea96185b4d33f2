"""Auto-pipelining: commands issued while a round trip is in flight share the next one.

Under load many handlers call Redis at once; sending each command alone costs a round trip
and ~0.2-0.35 ms of client CPU apiece. The batcher sends the first command at once (no added
latency when idle) and queues the ones that arrive meanwhile, to go together in one pipeline
when the round trip in flight returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streams.redis_errors import STORE_ERRORS
from streams.scripts import Arg, Script

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Call:
    args: tuple[Arg, ...]
    future: asyncio.Future[Any]
    script: Script | None = None


class PipelineBatcher:
    """Coalesces concurrent commands into pipelines (not transactions), one in flight."""

    def __init__(self, redis: Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._flushing: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.commands = 0

    async def execute(self, *args: Arg) -> Any:
        return await self._submit(_Call(args, asyncio.get_running_loop().create_future()))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        call = _Call(
            ("EVALSHA", script.sha, len(keys), *keys, *args),
            asyncio.get_running_loop().create_future(),
            script,
        )
        return await self._submit(call)

    async def _submit(self, call: _Call) -> Any:
        self._queue.append(call)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_all(), name="redis-batcher")
        return await call.future

    async def _flush_all(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._flush(batch)
        finally:
            self._flushing = None

    async def _flush(self, batch: list[_Call]) -> None:
        self.round_trips += 1
        self.commands += len(batch)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.execute_command(*call.args)
                results = await pipe.execute(raise_on_error=False)
        except STORE_ERRORS as exc:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError) and call.script is not None:
                result = await self._reload_and_retry(call)
            if call.future.done():
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _reload_and_retry(self, call: _Call) -> Any:
        assert call.script is not None
        try:
            await self._redis.script_load(call.script.source)
            return await self._redis.execute_command(*call.args)  # type: ignore[no-untyped-call]
        except STORE_ERRORS as exc:
            return exc
