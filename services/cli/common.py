"""What the verbs share: the SIGTERM flag, the store's URL, a Redis client for one command,
and a stdout that may close under them."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from types import FrameType

from redis.asyncio import Redis

from schemas.errors import ConfigError
from services.config.settings import Settings
from services.runtime.embedded import running_store_url
from streams.connections import detect_cluster, redis_client
from streams.partitions import Partitions, read_partitions


class TermFlag:
    """Remembers a SIGTERM that arrives while no event loop handles it.

    Without it, a SIGTERM before the loop installs its handler, or while the embedded Valkey
    starts or stops, kills the process (status -15) and orphans that Valkey.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self)


def identifier(raw: str) -> str:
    """An argparse type: a userId or screenId, non-empty."""
    if not raw.strip():
        msg = "must not be empty"
        raise argparse.ArgumentTypeError(msg)
    return raw


def write_stdout(data: bytes) -> None:
    """Write and flush; a reader that left (`| head`) ends the output silently."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit does not complain either."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def store_url(settings: Settings, command: str) -> str:
    """REDIS_URL, or else the embedded Valkey of the `serve` running on DATA_DIR.

    Raises:
        ConfigError: neither is there (one line: what to set or start).
    """
    if settings.redis_url is not None:
        return settings.redis_url
    url = running_store_url(settings.data_dir)
    if url is None:
        msg = (
            f"{command} needs REDIS_URL, or an `rdisplay serve` running with DATA_DIR "
            f"`{settings.data_dir}` (none runs there: start one with `make run`, or run this "
            "command where it runs)"
        )
        raise ConfigError(msg)
    return url


@contextlib.asynccontextmanager
async def connected(settings: Settings, command: str) -> AsyncIterator[tuple[Redis, Partitions]]:
    """A Redis client and the store's partitions (as recorded, else STREAM_PARTITIONS),
    closed when the command ends."""
    url = store_url(settings, command)
    redis = redis_client(url, cluster=await detect_cluster(url))
    try:
        yield (
            redis,
            await read_partitions(redis, settings.stream_prefix, settings.stream_partitions),
        )
    finally:
        await redis.aclose()
