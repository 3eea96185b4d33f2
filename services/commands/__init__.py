"""Operator and analyst commands (`replay`, `stats`, `dlq`): each module registers its own
subcommand with `register(subparsers)`; a handler is `(settings, args, term) -> exit code`."""

from __future__ import annotations

import argparse

from services.commands import dlq, replay, stats


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module in (replay, stats, dlq):
        module.register(sub)
