"""`rdisplay replay rebuild`: projections rebuilt from rd:events, compared with the live ones."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

import msgspec

from services.analytics.rebuild import RebuildReport, rebuild_and_compare
from services.cli.common import TermFlag, connected
from services.config.settings import Settings


def cmd_rebuild(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    """Rebuild every screen projection; report differences; `--apply` replaces the live ones.

    Exit status: 0 when the live projections match (or were all repaired with --apply), 1 when
    differences remain.
    """
    apply = bool(getattr(args, "apply", False))

    async def run() -> RebuildReport:
        async with connected(settings, "replay rebuild") as (redis, partitions):
            return await rebuild_and_compare(redis, partitions, apply=apply)

    body = dataclasses.asdict(asyncio.run(run()))
    if getattr(args, "json", False):
        sys.stdout.buffer.write(msgspec.json.encode(body) + b"\n")
    else:
        print(
            f"{body['events']} events ({body['undecodable']} undecodable, left out), "
            f"{body['screens']} screens rebuilt"
        )
        for diff in body["differences"]:
            applied = " (applied)" if diff["applied"] else ""
            print(f"  {diff['screen_id']}: {diff['kind']}{applied}")
            for name, values in diff["fields"].items():
                print(f"    {name}: live={values['live']!r} rebuilt={values['rebuilt']!r}")
        if not body["differences"]:
            print("  the live projections match the event log")
    if body["undecodable"]:
        print(
            f"rdisplay: replay rebuild: {body['undecodable']} of {body['events']} events could "
            "not be decoded and were left out (see them with `rdisplay replay`)",
            file=sys.stderr,
        )
    remaining = [d for d in body["differences"] if not d["applied"]]
    return 1 if remaining else 0
