"""`rdisplay`: the command line (SPEC section 8). Each verb's module registers its parser and
handler, `(settings, args, term) -> exit code`; `main` loads the settings, configures logging
and turns the project's errors into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from observability.logging import configure_logging
from schemas.errors import ConfigError, RemoteDisplayError
from services.cli import bench, dlq, pair, replay, serve, stats, token
from services.cli.common import TermFlag, silence_stdout
from services.config.settings import Settings, load_settings

logger = logging.getLogger("rdisplay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdisplay", description="remote-display: scan an order, show its document."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in (serve, token, pair, replay, stats, dlq, bench):
        verb.register(sub)
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
        silence_stdout()  # `rdisplay replay | head`: the reader left; end silently
        return 0
    except Exception:
        logger.exception("rdisplay stopped by an unexpected error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
