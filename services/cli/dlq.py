"""`rdisplay dlq list|show|redrive|purge`: the dead-letter stream, for operators.

Ids are `rd:dead-letter` entry ids. Redrive re-appends the original entry to `rd:triggers`
(same trigger id, so idempotency holds) and deletes the dead-letter entry in the same atomic
step; the worker processes it again and its new outcome replaces `dead_lettered`. Purge asks
for confirmation unless `--yes`, and deletes only what existed when it asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from schemas.errors import ConfigError
from services.cli.common import TermFlag, connected
from services.config.settings import Settings
from streams.dead_letter import ADDED_FIELDS, DeadLetterStore
from streams.keys import Keyspace

_json = msgspec.json.Encoder()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="dead-letter operations: list, show, redrive, purge")
    verbs = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    verbs.add_parser("list", help="every dead-letter entry, one JSON object per line").set_defaults(
        func=cmd_list
    )
    show = verbs.add_parser("show", help="one dead-letter entry as JSON")
    show.add_argument("id", help="a rd:dead-letter entry id")
    show.set_defaults(func=cmd_show)
    redrive = verbs.add_parser("redrive", help="put entries back on rd:triggers")
    target = redrive.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="a rd:dead-letter entry id")
    target.add_argument("--all", action="store_true", help="every entry there is now")
    redrive.set_defaults(func=cmd_redrive)
    purge = verbs.add_parser("purge", help="delete every dead-letter entry there is now")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(func=cmd_purge)


def _store(redis: Any, keyspace: Keyspace, settings: Settings) -> DeadLetterStore:
    return DeadLetterStore(
        redis=redis,
        dead_letter=keyspace.dead_letter,
        source=keyspace.triggers,
        maxlen=settings.stream_maxlen,
    )


def describe(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A dead-letter entry for people and machines: bookkeeping first, data decoded."""
    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    out: dict[str, Any] = {"id": entry_id}
    for name in ADDED_FIELDS:
        if name in text:
            value: Any = text[name]
            if name in ("deliveries", "failedAt") and value.isdigit():
                value = int(value)
            out[name] = value
    out["type"] = text.get("type")
    out["v"] = int(text["v"]) if text.get("v", "").isdigit() else text.get("v")
    raw = text.get("data")
    try:
        out["data"] = msgspec.json.decode(raw) if raw is not None else None
    except msgspec.DecodeError as exc:
        # Poison: as `rdisplay replay` writes it, so a reader of either sees the same keys.
        out["data"] = None
        out["decodeError"] = str(exc)
        out["rawData"] = raw
    if raw is None:
        out["decodeError"] = "entry has no data field"
    for name, value in text.items():
        if name not in out and name not in ("data",):
            out[name] = value
    return out


def _print(value: Any) -> None:
    sys.stdout.buffer.write(_json.encode(value) + b"\n")


def cmd_list(settings: Settings, _args: argparse.Namespace, _term: TermFlag) -> int:
    async def run() -> tuple[int, int]:
        listed = undecodable = 0
        async with connected(settings, "dlq") as (redis, keyspace):
            async for entry_id, fields in _store(redis, keyspace, settings).entries():
                line = describe(entry_id, fields)
                listed += 1
                undecodable += "decodeError" in line
                _print(line)
        sys.stdout.flush()
        return listed, undecodable

    listed, undecodable = asyncio.run(run())
    if undecodable:
        print(
            f"rdisplay: dlq list: {undecodable} of {listed} entries have data that could not be "
            "decoded (listed with decodeError and rawData)",
            file=sys.stderr,
        )
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    async def run() -> dict[bytes, bytes] | None:
        async with connected(settings, "dlq") as (redis, keyspace):
            return await _store(redis, keyspace, settings).get(args.id)

    fields = asyncio.run(run())
    if fields is None:
        print(f"rdisplay: no dead-letter entry {args.id}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(msgspec.json.format(_json.encode(describe(args.id, fields))) + b"\n")
    return 0


def cmd_redrive(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    async def run() -> int:
        missing = 0
        async with connected(settings, "dlq") as (redis, keyspace):
            store = _store(redis, keyspace, settings)
            if args.all:
                last = await store.last_id()
                ids = [i async for i, _ in store.entries(until=last)] if last else []
            else:
                ids = [args.id]
            for entry_id in ids:
                new_id = await store.redrive(entry_id)
                if new_id is None:
                    missing += 1
                    _print({"id": entry_id, "redriven": False, "reason": "no such entry"})
                else:
                    _print({"id": entry_id, "redriven": True, "entryId": new_id})
        sys.stdout.flush()
        return 1 if missing and not args.all else 0

    return asyncio.run(run())


def cmd_purge(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    async def count() -> tuple[int, str | None]:
        async with connected(settings, "dlq") as (redis, keyspace):
            store = _store(redis, keyspace, settings)
            return int(await redis.xlen(keyspace.dead_letter)), await store.last_id()

    total, last = asyncio.run(count())
    if last is None:
        print("rdisplay: the dead letter is empty", file=sys.stderr)
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            msg = "dlq purge deletes entries for good: pass --yes when not at a terminal"
            raise ConfigError(msg)
        # The question goes to stderr: stdout carries only the JSON result.
        sys.stderr.write(f"Delete {total} dead-letter entries (up to {last})? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            print("rdisplay: nothing deleted", file=sys.stderr)
            return 1

    async def purge() -> int:
        async with connected(settings, "dlq") as (redis, keyspace):
            return await _store(redis, keyspace, settings).purge(last)

    deleted = asyncio.run(purge())
    _print({"deleted": deleted, "upTo": last})
    return 0
