"""`rdisplay stats` (SPEC section 8): outcome counts and latency percentiles over `rd:events`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from schemas.errors import ConfigError, ReplayRangeError
from services.analytics.stats import (
    OUTCOMES,
    PERCENTILES,
    STAGES,
    StatsReport,
    Summary,
    collect_stats,
)
from services.cli.common import TermFlag, connected
from services.config.settings import Settings
from streams.replay import parse_bound

_DESCRIPTION = """\
Count triggers by outcome (projected, rejected, dead_lettered; each trigger once, by its last
outcome in the range) and give nearest-rank latency percentiles p50/p95/p99 in ms, overall and
per screen, for the events of rd:events in [--since, --until).

stages:
""" + "\n".join(f"  {name:<10} {text}" for name, text in STAGES.items())

_BOUND_HELP = (
    "an ISO-8601 time (naive is UTC; a date alone is its midnight), an entry id <ms>[-<seq>], "
    "`now`, or -<n>s|m|h|d before now (as --since=-2h)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "stats",
        help="counts by outcome and latency percentiles (timestamp → received → projected → "
        "shown), overall and per screen",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--since", metavar="T", help=f"first event, inclusive: {_BOUND_HELP}")
    parser.add_argument("--until", metavar="T", help=f"end, exclusive: {_BOUND_HELP}")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"overall", "screens": {S: ...}} as JSON instead of a table',
    )
    parser.set_defaults(func=cmd_stats)


def cmd_stats(settings: Settings, args: argparse.Namespace, term: TermFlag) -> int:
    since = _bound(args.since, "--since")
    until = _bound(args.until, "--until")
    interactive = sys.stderr.isatty()
    report = asyncio.run(_collect(settings, since, until, term, interactive=interactive))
    if report is None:
        print("rdisplay: stats stopped by SIGTERM", file=sys.stderr)
        return 143
    out = msgspec.json.encode(report) + b"\n" if args.json else render_table(report).encode()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()  # a closed stdout raises here, and main() ends silently
    if report.events_skipped:
        print(
            f"rdisplay: stats: {report.events_skipped} of {report.events_read} events could not "
            "be decoded and are not counted (see them with `rdisplay replay`)",
            file=sys.stderr,
        )
    return 0


async def _collect(
    settings: Settings,
    since: str | None,
    until: str | None,
    term: TermFlag,
    *,
    interactive: bool,
) -> StatsReport | None:
    def progress(read: int) -> None:
        sys.stderr.write(f"\rstats: {read} events read")
        sys.stderr.flush()

    async with connected(settings, "stats") as (redis, partitions):
        try:
            return await collect_stats(
                redis,
                [space.events for space in partitions.spaces],
                since=since,
                until=until,
                progress=progress if interactive else None,
                stop=lambda: term.requested,
            )
        finally:
            if interactive:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()


def _bound(raw: str | None, option: str) -> str | None:
    """The entry id of a `--since`/`--until` value; a bad one is a usage error (exit 2)."""
    if raw is None:
        return None
    try:
        return parse_bound(raw)
    except ReplayRangeError as exc:
        msg = f"{option}: {exc}"
        raise ConfigError(msg) from None


def render_table(report: StatsReport) -> str:
    """The report for a terminal: overall, then one line per screen."""
    header = ["screen", *OUTCOMES, *(f"{name} ms" for name in STAGES)]
    rows = [_row("(overall)", report.overall)]
    rows += [_row(screen, summary) for screen, summary in report.screens.items()]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    numeric = range(1, len(header))

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    since = f"{report.range.since} (inclusive)" if report.range.since else "the start"
    until = f"{report.range.until} (exclusive)" if report.range.until else "the end"
    percentiles = "/".join(f"p{p}" for p in PERCENTILES)
    return "\n".join(
        [
            f"events from {since} to {until}: {report.events_read} read, "
            f"{report.events_skipped} undecodable (not counted)",
            f"latency: {percentiles} in ms (samples); - without samples",
            line(header),
            *(line(row) for row in rows),
            "",
        ]
    )


def _row(name: str, summary: Summary) -> list[str]:
    outcomes = summary.outcomes
    cells = [name, str(outcomes.projected), str(outcomes.rejected), str(outcomes.dead_lettered)]
    for stage in STAGES:
        latency = summary.latency_ms[stage]
        values = "/".join(
            "-" if v is None else str(v) for v in (latency.p50, latency.p95, latency.p99)
        )
        cells.append(f"{values} ({latency.count})")
    return cells
