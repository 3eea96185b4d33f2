"""`rdisplay serve`, `edge`, `worker` (SPEC section 2): the services, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from schemas.errors import ConfigError
from services.cli.common import TermFlag
from services.config.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve", help="all in one: edge + worker (+ embedded Valkey without REDIS_URL)"
    )
    serve.set_defaults(func=cmd_serve, service=True)
    edge = sub.add_parser("edge", help="the Socket.IO edge and HTTP API")
    edge.set_defaults(func=cmd_edge, service=True)
    worker = sub.add_parser("worker", help="a member of consumer group `projector`")
    worker.add_argument(
        "--partitions",
        type=_partition_list,
        metavar="P,Q,...",
        help="serve only these stream partitions (default: every one, SPEC 11)",
    )
    worker.set_defaults(func=cmd_worker, service=True)


def _partition_list(raw: str) -> tuple[int, ...]:
    try:
        chosen = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        msg = f"`{raw}` is not a list of partition numbers such as 0,3,5"
        raise argparse.ArgumentTypeError(msg) from None
    if not chosen or chosen[0] < 0:
        msg = f"`{raw}` names no partition (numbers from 0)"
        raise argparse.ArgumentTypeError(msg)
    return chosen


def cmd_serve(settings: Settings, _args: argparse.Namespace, term: TermFlag) -> int:
    """The edge and a worker, each a process of its own, supervised by this one."""
    if settings.redis_url is not None:
        _supervise(settings, settings.redis_url, term)
        return 0
    from services.runtime.embedded import embedded_valkey

    with embedded_valkey(settings.data_dir) as url:
        _supervise(msgspec.structs.replace(settings, redis_url=url), url, term)
    return 0


def _supervise(settings: Settings, redis_url: str, term: TermFlag) -> None:
    from services.runtime.supervisor import supervise

    async def main() -> None:
        await check_partitions(settings, redis_url)
        await supervise(settings, redis_url=redis_url, stop=_stop_on_signals(term))

    try:
        _event_loop_runner()(main())
    finally:
        term.install()  # closing the loop put SIG_DFL back


def cmd_worker(settings: Settings, args: argparse.Namespace, term: TermFlag) -> int:
    if settings.redis_url is None:
        msg = "rdisplay worker needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    chosen = getattr(args, "partitions", None)
    if chosen is not None and chosen[-1] >= settings.stream_partitions:
        msg = (
            f"--partitions {chosen[-1]}: partitions are numbered 0 to "
            f"{settings.stream_partitions - 1} (STREAM_PARTITIONS={settings.stream_partitions})"
        )
        raise ConfigError(msg)
    _run(settings, term, edge=False, partitions=chosen)
    return 0


def cmd_edge(settings: Settings, _args: argparse.Namespace, term: TermFlag) -> int:
    if settings.redis_url is None:
        msg = "rdisplay edge needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    _run(settings, term, worker=False)
    return 0


def _run(
    settings: Settings,
    term: TermFlag,
    *,
    edge: bool = True,
    worker: bool = True,
    partitions: Sequence[int] | None = None,
) -> None:
    try:
        _event_loop_runner()(
            _serve(settings, term, edge=edge, worker=worker, partitions=partitions)
        )
    finally:
        term.install()  # closing the loop put SIG_DFL back


async def _serve(
    settings: Settings,
    term: TermFlag,
    *,
    edge: bool,
    worker: bool,
    partitions: Sequence[int] | None = None,
) -> None:
    from services.runtime.process import run_services

    if settings.redis_url is not None:
        settings = await check_partitions(settings, settings.redis_url)
    await run_services(
        settings, stop=_stop_on_signals(term), edge=edge, worker=worker, partitions=partitions
    )


async def check_partitions(settings: Settings, redis_url: str) -> Settings:
    """Refuse to start with a STREAM_PARTITIONS the store was not started with (SPEC 11),
    once, before any child process starts (a child would fail and be restarted in a loop).
    A store that does not answer is left to the services, which wait for it. Returns
    `settings` with the store's mode, so that this process does not detect it again."""
    from redis.exceptions import RedisError

    from schemas.errors import StoreUnavailableError
    from streams.connections import detect_cluster, redis_client
    from streams.partitions import open_partitions

    try:
        cluster = await detect_cluster(redis_url, wait_s=2.0)
    except StoreUnavailableError:
        return settings
    redis = redis_client(redis_url, cluster=cluster)
    try:
        await open_partitions(
            redis, settings.stream_prefix, settings.stream_partitions, cluster=cluster
        )
    except (RedisError, OSError):
        pass
    finally:
        await redis.aclose()
    return msgspec.structs.replace(settings, redis_cluster=cluster)


def _stop_on_signals(term: TermFlag) -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets (or a SIGTERM that came before the loop ran)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if term.requested:
        stop.set()
    return stop


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where it is installed (it halves the event loop's cost per message)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run
    return uvloop.run
