"""`rdisplay`: the command line (SPEC section 8)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any

import msgspec
from redis.asyncio import Redis

from observability.logging import configure_logging
from schemas.errors import ConfigError, RemoteDisplayError
from services.commands import register_all
from services.commands.common import store_url
from services.edge.tokens import ACCESS_TTL_S, REFRESH_TTL_S, ROLES, TokenPair, TokenService
from services.secrets import JwtSecrets, resolve_secrets
from services.settings import Settings, load_settings
from streams.keys import Keyspace

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


async def _serve(settings: Settings, term: TermFlag, *, edge: bool, worker: bool) -> None:
    from services.runtime import run_services

    stop = asyncio.Event()
    _install_stop_signals(stop, term)
    await run_services(settings, stop=stop, edge=edge, worker=worker)


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop where it is installed (it halves the event loop's cost per message)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run
    return uvloop.run


def _run(settings: Settings, term: TermFlag, *, edge: bool = True, worker: bool = True) -> None:
    try:
        _event_loop_runner()(_serve(settings, term, edge=edge, worker=worker))
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
    _run(settings, term, edge=False)
    return 0


def cmd_edge(settings: Settings, _args: argparse.Namespace, term: TermFlag) -> int:
    if settings.redis_url is None:
        msg = "rdisplay edge needs REDIS_URL (only `rdisplay serve` starts an embedded Valkey)"
        raise ConfigError(msg)
    _run(settings, term, worker=False)
    return 0


def cmd_token_issue(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    # The refresh token is recorded in the store of the edges that will accept it: REDIS_URL,
    # or the embedded Valkey of the `serve` running on DATA_DIR (never a throw-away one).
    url = store_url(settings, "token issue")
    secrets = resolve_secrets(settings)
    pair = asyncio.run(_issue_pair(url, settings, secrets, args))
    _write_stdout(msgspec.json.encode(pair) + b"\n")
    return 0


async def _issue_pair(
    redis_url: str, settings: Settings, secrets: JwtSecrets, args: argparse.Namespace
) -> TokenPair:
    redis = Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        tokens = TokenService(
            secrets=secrets, redis=redis, keyspace=Keyspace(settings.stream_prefix)
        )
        return await tokens.issue_pair(args.user, args.screen, args.role, ttl_s=args.ttl)
    finally:
        await redis.aclose()


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        # `| head` closed stdout: end silently, and keep the interpreter's final flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _identifier(raw: str) -> str:
    if not raw.strip():
        msg = "must not be empty"
        raise argparse.ArgumentTypeError(msg)
    return raw


def _lifetime(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = f"`{raw}` is not a whole number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if not 1 <= value <= REFRESH_TTL_S:
        msg = f"`{raw}` is out of range: use 1 to {REFRESH_TTL_S} seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdisplay", description="remote-display: scan an order, show its document."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve", help="all in one: edge + worker (+ embedded Valkey without REDIS_URL)"
    )
    serve.set_defaults(func=cmd_serve, service=True)
    edge = sub.add_parser("edge", help="the Socket.IO edge and HTTP API")
    edge.set_defaults(func=cmd_edge, service=True)
    worker = sub.add_parser("worker", help="a member of consumer group `projector`")
    worker.set_defaults(func=cmd_worker, service=True)
    token = sub.add_parser("token", help="issue tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    issue = token_sub.add_parser(
        "issue",
        help="print {accessToken, refreshToken, expiresIn} as JSON (needs REDIS_URL or a "
        "running `rdisplay serve` on DATA_DIR)",
    )
    issue.add_argument("--user", required=True, type=_identifier, help="the userId claim")
    issue.add_argument("--screen", required=True, type=_identifier, help="the screenId claim")
    issue.add_argument("--role", default="controller", choices=ROLES, help="default: controller")
    issue.add_argument(
        "--ttl",
        type=_lifetime,
        default=ACCESS_TTL_S,
        metavar="SECONDS",
        help=f"access token lifetime (default {ACCESS_TTL_S})",
    )
    issue.set_defaults(func=cmd_token_issue)
    register_all(sub)
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
    configure_logging(
        settings.log_level, settings.log_format, service=getattr(args, "service", False)
    )
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
    except BrokenPipeError:
        # `rdisplay replay | head`: the reader left; end silently, and keep Python's own
        # flush at exit from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception:
        logger.exception("rdisplay stopped by an unexpected error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
