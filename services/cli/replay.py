"""`rdisplay replay` (SPEC section 8): stream entries as JSONL or CSV on stdout.

Reads page by page (`streams.replay.read_pages`), so memory stays flat however long the
range; each page is written and flushed at once, so a reader that leaves (`| head`) ends the
command at the next page with a BrokenPipeError that `rdisplay`'s main() turns into a silent
exit 0. `data` is spliced into JSONL as stored (checked to be JSON, not re-encoded) unless
`--screen` needs its values.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from schemas.errors import ReplayRangeError
from services.cli import rebuild
from services.cli.common import TermFlag, connected, store_url
from services.config.settings import Settings
from streams.ids import id_time_ms
from streams.keys import Keyspace
from streams.replay import DEFAULT_PAGE_SIZE, Page, Record, id_before, parse_bound, read_pages
from streams.retention import retention as stream_retention

STREAMS: dict[str, Callable[[Keyspace], str]] = {
    "triggers": lambda keyspace: keyspace.triggers,
    "events": lambda keyspace: keyspace.events,
    "dead-letter": lambda keyspace: keyspace.dead_letter,
}
CSV_HEADER = ("id", "type", "v", "data")
INTEGER_FIELDS = frozenset({"deliveries", "failedAt"})
"""Dead-letter fields written as numbers in JSONL (streams store every field as text)."""
PROGRESS_INTERVAL_S = 0.25

_encoder = msgspec.json.Encoder()


class _Line(msgspec.Struct):
    """A JSONL line for an entry with no field beyond `type`, `v`, `data` (the common case)."""

    id: str
    type: str
    v: int | None
    data: Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay",
        help="write stream entries as JSONL or CSV (`replay rebuild`: rebuild projections)",
        description=(
            "Write the entries of a stream to stdout, oldest first. T is an ISO-8601 time "
            "(naive = UTC; 2024-06-01, 2024-06-01T12:00:00Z), an entry id (1717243200000-0 "
            "or 1717243200000), `now` or `-15m`/`-2h`/`-7d` (write `--since=-2h`). "
            "--since is inclusive, --until exclusive."
        ),
    )
    parser.add_argument("--stream", choices=tuple(STREAMS), default="events")
    parser.add_argument("--since", metavar="T", help="first time or entry id (inclusive)")
    parser.add_argument("--until", metavar="T", help="end time or entry id (exclusive)")
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="X",
        help="only entries of this type (repeat it, or separate types by commas)",
    )
    parser.add_argument("--screen", metavar="S", help="only entries whose data has screenId S")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument(
        "--page-size",
        type=_page_size,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"entries per XRANGE call (default {DEFAULT_PAGE_SIZE})",
    )
    parser.set_defaults(func=cmd_replay)
    replay_sub = parser.add_subparsers(dest="replay_command", metavar="COMMAND")
    rebuild_parser = replay_sub.add_parser(
        "rebuild",
        help="rebuild every projection from the events stream and report differences",
    )
    rebuild_parser.add_argument(
        "--apply", action="store_true", help="replace the live projections that differ"
    )
    rebuild_parser.add_argument("--json", action="store_true", help="the report as JSON")


def _page_size(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = f"`{raw}` is not a whole number"
        raise argparse.ArgumentTypeError(msg) from None
    if not 1 <= value <= 100_000:
        msg = f"`{raw}` is out of range: use 1 to 100000"
        raise argparse.ArgumentTypeError(msg)
    return value


def cmd_replay(settings: Settings, args: argparse.Namespace, term: TermFlag) -> int:
    if args.replay_command == "rebuild":
        return rebuild.cmd_rebuild(settings, args, term)
    bounds: dict[str, str | None] = {}
    for option, text in (("--since", args.since), ("--until", args.until)):
        try:
            bounds[option] = None if text is None else parse_bound(text)
        except ReplayRangeError as exc:
            print(f"rdisplay: {option}: {exc}", file=sys.stderr)
            return 2
    store_url(settings, "replay")  # a missing store is a usage error before any output
    types = None
    if args.types:
        types = {name.strip() for value in args.types for name in value.split(",") if name}
    asyncio.run(
        _replay(
            settings,
            stream=args.stream,
            since=bounds["--since"],
            until=bounds["--until"],
            types=types,
            screen=args.screen,
            fmt=args.format,
            page_size=args.page_size,
            out=sys.stdout.buffer,
            err=sys.stderr,
        )
    )
    return 0


async def _replay(
    settings: Settings,
    *,
    stream: str,
    since: str | None,
    until: str | None,
    types: set[str] | None,
    screen: str | None,
    fmt: str,
    page_size: int,
    out: IO[bytes],
    err: IO[str],
) -> None:
    async with connected(settings, "replay") as (redis, partitions):
        keys = [STREAMS[stream](space) for space in partitions.spaces]
        for key in keys:
            retained = await stream_retention(redis, key)
            if _starts_before_retained(since, retained.oldest, retained.removed):
                where = f" of {key}" if len(keys) > 1 else ""
                print(
                    f"rdisplay: range starts before the oldest retained entry{where} "
                    f"{retained.oldest} (STREAM_MAXLEN={settings.stream_maxlen})",
                    file=err,
                )
        write = _write_csv if fmt == "csv" else _write_jsonl
        if fmt == "csv":
            out.write(_csv_text([CSV_HEADER]))
        progress = _Progress(err) if err.isatty() else None
        undecodable = left_out = 0
        try:
            async for page in read_pages(
                redis,
                keys[0] if len(keys) == 1 else keys,
                since=since,
                until=until,
                types=types,
                where=None if screen is None else {"screenId": screen},
                page_size=page_size,
                passthrough=True,
            ):
                write(page, out)
                out.flush()
                undecodable += page.undecodable
                left_out += page.undecodable - sum(1 for r in page.records if r.undecodable)
                if progress is not None:
                    progress.update(page)
        finally:
            if progress is not None:
                progress.close()
        if undecodable:
            print(_undecodable_note(undecodable, left_out, fmt), file=err)


def _undecodable_note(undecodable: int, left_out: int, fmt: str) -> str:
    """One stderr line: how many entries had `data` that is not JSON, and where they went."""
    written = undecodable - left_out
    parts = []
    if written:
        how = "with decodeError and rawData" if fmt == "jsonl" else "with an empty data column"
        parts.append(f"{written} written {how}")
    if left_out:
        parts.append(f"{left_out} left out by --screen (their screenId cannot be read)")
    entries = "entry" if undecodable == 1 else "entries"
    return f"rdisplay: {undecodable} {entries} could not be decoded: {'; '.join(parts)}"


def _starts_before_retained(since: str | None, oldest: str | None, removed: int | None) -> bool:
    """Whether the requested range reaches entries the stream no longer holds.

    Without --since the range is the whole history: that lost entries only if some were
    trimmed. With it, an older bound is reported unless the stream says it never dropped one.
    """
    if oldest is None or removed == 0:
        return False
    if since is None:
        return removed is not None
    return id_before(since, oldest)


def _write_jsonl(page: Page, out: IO[bytes]) -> None:
    out.write(_encoder.encode_lines([_jsonl(record) for record in page.records]))


def _jsonl(record: Record) -> _Line | dict[str, Any]:
    if not record.fields and record.decode_error is None:
        return _Line(record.id, record.type, record.v, record.data)
    line: dict[str, Any] = {
        "id": record.id,
        "type": record.type,
        "v": record.v,
        "data": record.data,
    }
    for name, value in record.fields.items():
        line[name] = int(value) if name in INTEGER_FIELDS and value.isdigit() else value
    if record.decode_error is not None:
        line["decodeError"] = record.decode_error
        line["rawData"] = record.raw.decode(errors="replace")
    return line


def _write_csv(page: Page, out: IO[bytes]) -> None:
    out.write(
        _csv_text(
            (
                record.id,
                record.type,
                "" if record.v is None else record.v,
                "" if record.data is None else bytes(record.data).decode(),
            )
            for record in page.records
        )
    )


def _csv_text(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


class _Progress:
    """One stderr line, redrawn with \\r at most every PROGRESS_INTERVAL_S."""

    def __init__(self, err: IO[str]) -> None:
        self._err = err
        self._written = 0
        self._scanned = 0
        self._last_id = ""
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, page: Page) -> None:
        self._written += len(page.records)
        self._scanned += page.scanned
        self._last_id = page.last_id
        now = time.monotonic()
        if now - self._drawn_at >= PROGRESS_INTERVAL_S:
            self._draw()
            self._drawn_at = now

    def close(self) -> None:
        if self._drawn:
            self._draw()
            self._err.write("\n")
            self._err.flush()

    def _draw(self) -> None:
        where = ""
        if self._last_id:
            try:
                at = datetime.fromtimestamp(id_time_ms(self._last_id) / 1000, UTC)
                where = f", at {at:%Y-%m-%dT%H:%M:%S}Z ({self._last_id})"
            except (OverflowError, OSError, ValueError):  # an id far beyond any clock
                where = f", at {self._last_id}"
        self._err.write(f"\rreplay: {self._written:,} written of {self._scanned:,} read{where}")
        self._err.flush()
        self._drawn = True
