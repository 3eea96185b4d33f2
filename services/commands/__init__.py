"""Operator and analyst commands (`replay`, `stats`, `dlq`, `bench`): each module registers its own
subcommand with `register(subparsers)`; a handler is `(settings, args, term) -> exit code`."""

from __future__ import annotations

import argparse

from services.commands import bench, dlq, replay, stats


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module in (replay, stats, dlq, bench):
        module.register(sub)
