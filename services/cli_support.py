"""Types the command modules share with the CLI entry point."""

from __future__ import annotations

from typing import Protocol


class TermFlagLike(Protocol):
    """Whether a SIGTERM arrived (services/cli.py TermFlag)."""

    requested: bool
