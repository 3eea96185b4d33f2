"""`rdisplay`: the command line (SPEC section 8)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import msgspec

from observability.logging import configure_logging
from schemas.errors import ConfigError, RemoteDisplayError
from services.settings import Settings, load_settings

logger = logging.getLogger("rdisplay")


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


def _install_stop_signals(stop: asyncio.Event, term: TermFlag) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if term.requested:
        stop.set()


async def _serve(settings: Settings, term: TermFlag) -> None:
    from services.worker.app import run_worker

    stop = asyncio.Event()
    _install_stop_signals(stop, term)
    await run_worker(settings, stop=stop)


def _run(settings: Settings, term: TermFlag) -> None:
    try:
        asyncio.run(_serve(settings, term))
    finally:
        term.install()  # closing the loop put SIG_DFL back


def cmd_serve(settings: Settings, _args: argparse.Namespace, term: TermFlag) -> int:
    if settings.redis_url is not None:
        _run(settings, term)
        return 0
    from services.embedded import embedded_valkey

    with embedded_valkey(settings.data_dir) as url:
        _run(msgspec.structs.replace(settings, redis_url=url), term)
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace, term: TermFlag) -> int:
    if settings.redis_url is None:
        msg = "rdisplay worker needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    _run(settings, term)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdisplay", description="remote-display: scan an order, show its document."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="all in one: worker (+ embedded Valkey without REDIS_URL)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="a member of consumer group `projector`")
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[Settings, argparse.Namespace, TermFlag], int] = args.func
    term = TermFlag()
    term.install()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"rdisplay: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return func(settings, args, term)
    except ConfigError as exc:
        print(f"rdisplay: {exc}", file=sys.stderr)
        return 2
    except RemoteDisplayError as exc:
        logger.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        logger.exception("rdisplay stopped by an unexpected error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
