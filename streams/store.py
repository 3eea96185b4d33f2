"""Appending to streams with approximate retention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

Fields = Mapping[str, bytes] | Mapping[str | bytes, bytes | str | int]


class StreamStore:
    """Appends entries with `XADD ... MAXLEN ~ maxlen`."""

    def __init__(self, *, redis: Redis, maxlen: int) -> None:
        self._redis = redis
        self.maxlen = maxlen

    async def append(self, stream: str, fields: Fields) -> str:
        entry_id = await self._redis.xadd(
            stream,
            dict(fields),  # type: ignore[arg-type]  # redis-py's stubs are narrower than it is
            maxlen=self.maxlen,
            approximate=True,
        )
        return _text(entry_id)

    async def append_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        """Append in one round trip (a pipeline, not a transaction)."""
        if not entries:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, dict(fields), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            ids = await pipe.execute()
        return [_text(i) for i in ids]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
