"""Merging the pages of several streams (the partitions of one stream, SPEC 11) by entry id."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

RawPage = list[tuple[bytes, dict[bytes, bytes]]]


async def merge_by_id(
    sources: list[AsyncIterator[RawPage]], page_size: int
) -> AsyncIterator[RawPage]:
    """Pages of the entries of several id-ordered page sources, in entry id order (equal ids in
    the order of the sources), each `page_size` long but the last; one page per source in
    memory."""
    buffers: list[collections.deque[tuple[bytes, dict[bytes, bytes]]]] = []
    live: list[int] = []
    for index, source in enumerate(sources):
        buffers.append(collections.deque())
        if await _refill(source, buffers[index]):
            live.append(index)
    out: RawPage = []
    while live:
        best = min(live, key=lambda i: (_id_key(buffers[i][0][0]), i))
        out.append(buffers[best].popleft())
        if not buffers[best] and not await _refill(sources[best], buffers[best]):
            live.remove(best)
        if len(out) == page_size:
            yield out
            out = []
    if out:
        yield out


async def _refill(
    source: AsyncIterator[RawPage], buffer: collections.deque[tuple[bytes, dict[bytes, bytes]]]
) -> bool:
    async for page in source:
        buffer.extend(page)
        return True
    return False


def _id_key(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)
