"""Appending to streams with approximate retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from streams.batcher import PipelineBatcher
from streams.values import as_text

Fields = Mapping[str, bytes | str | int] | Mapping[bytes, bytes | str | int]


class StreamStore:
    """Appends entries with `XADD ... MAXLEN ~ maxlen` (auto-pipelined with a batcher)."""

    def __init__(
        self, *, redis: Redis, maxlen: int, batcher: PipelineBatcher | None = None
    ) -> None:
        self._redis = redis
        self.maxlen = maxlen
        self._batcher = batcher

    async def append(self, stream: str, fields: Fields) -> str:
        if self._batcher is not None:
            flat: list[str | bytes | int] = []
            for name, value in fields.items():
                flat += (name, value)
            reply = await self._batcher.execute(
                "XADD", stream, "MAXLEN", "~", self.maxlen, "*", *flat
            )
            return as_text(reply)
        entry_id = await self._redis.xadd(
            stream,
            dict(fields),  # type: ignore[arg-type]  # redis-py's stubs are narrower than it is
            maxlen=self.maxlen,
            approximate=True,
        )
        return as_text(entry_id)

    async def append_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        """Append in one round trip (a pipeline, not a transaction)."""
        if not entries:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, dict(fields), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            ids = await pipe.execute()
        return [as_text(i) for i in ids]
