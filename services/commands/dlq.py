"""`rdisplay dlq` (SPEC section 8)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Not registered yet."""
