"""`rdisplay dlq list|show|redrive|purge`: the dead-letter stream, for operators.

Ids are `rd:dead-letter` entry ids. With several partitions (SPEC 11) every partition's dead
letter is read, merged by entry id, each line naming its `partition`; an id found in two
partitions needs `--partition`. Redrive re-appends the original entry to `rd:triggers`
(same trigger id, so idempotency holds) and deletes the dead-letter entry in the same atomic
step; the worker processes it again and its new outcome replaces `dead_lettered`. Purge asks
for confirmation unless `--yes`, and deletes only what existed when it asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from schemas.errors import ConfigError
from services.cli.common import TermFlag, connected
from services.config.settings import Settings
from streams.dead_letter import DeadLetterStore, describe, locate, stores_of
from streams.fence import ReplicaFence
from streams.ids import is_newer, parse_id
from streams.partitions import Partitions

_json = msgspec.json.Encoder()
FENCE_DEADLINE_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="dead-letter operations: list, show, redrive, purge")
    verbs = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    verbs.add_parser("list", help="every dead-letter entry, one JSON object per line").set_defaults(
        func=cmd_list
    )
    show = verbs.add_parser("show", help="one dead-letter entry as JSON")
    show.add_argument("id", help="a rd:dead-letter entry id")
    _partition_option(show)
    show.set_defaults(func=cmd_show)
    redrive = verbs.add_parser("redrive", help="put entries back on rd:triggers")
    target = redrive.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="a rd:dead-letter entry id")
    target.add_argument("--all", action="store_true", help="every entry there is now")
    _partition_option(redrive)
    redrive.set_defaults(func=cmd_redrive)
    purge = verbs.add_parser("purge", help="delete every dead-letter entry there is now")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(func=cmd_purge)


def _partition_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--partition",
        type=int,
        metavar="P",
        help="the partition whose dead letter holds the id (when the store has several)",
    )


def _stores(redis: Any, partitions: Partitions, settings: Settings) -> list[DeadLetterStore]:
    return stores_of(redis, partitions.spaces, settings.stream_maxlen)


class _Ambiguous(Exception):
    pass


async def _find(
    stores: list[DeadLetterStore], entry_id: str, partition: int | None
) -> tuple[int, DeadLetterStore, dict[bytes, bytes]] | None:
    """The partition, store and fields of a dead-letter id."""
    if partition is not None and not 0 <= partition < len(stores):
        msg = f"--partition {partition}: the store has partitions 0 to {len(stores) - 1}"
        raise ConfigError(msg)
    found = await locate(stores, entry_id, partition)
    if len(found) > 1:
        names = " and ".join(str(index) for index, _, _ in found)
        msg = f"{entry_id} is in partitions {names}: pass --partition"
        raise _Ambiguous(msg)
    return found[0] if found else None


async def _merged_entries(
    stores: list[DeadLetterStore],
) -> AsyncIterator[tuple[int, str, dict[bytes, bytes]]]:
    """Every partition's entries, merged by entry id."""
    if len(stores) == 1:
        async for entry_id, fields in stores[0].entries():
            yield 0, entry_id, fields
        return
    heads: list[tuple[str, dict[bytes, bytes]] | None] = []
    sources = [store.entries() for store in stores]
    for source in sources:
        heads.append(await anext(source, None))
    while True:
        live = [i for i, head in enumerate(heads) if head is not None]
        if not live:
            return
        best = live[0]
        for index in live[1:]:
            if is_newer(heads[best][0], heads[index][0]):  # type: ignore[index]
                best = index
        entry_id, fields = heads[best]  # type: ignore[misc]
        yield best, entry_id, fields
        heads[best] = await anext(sources[best], None)


def _print(value: Any) -> None:
    sys.stdout.buffer.write(_json.encode(value) + b"\n")


def cmd_list(settings: Settings, _args: argparse.Namespace, _term: TermFlag) -> int:
    async def run() -> tuple[int, int]:
        listed = undecodable = 0
        async with connected(settings, "dlq") as (redis, partitions):
            stores = _stores(redis, partitions, settings)
            async for partition, entry_id, fields in _merged_entries(stores):
                line = describe(entry_id, fields)
                if len(stores) > 1:
                    line["partition"] = partition
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
    async def run() -> tuple[int, dict[bytes, bytes], int] | None:
        async with connected(settings, "dlq") as (redis, partitions):
            stores = _stores(redis, partitions, settings)
            found = await _find(stores, args.id, args.partition)
            return None if found is None else (found[0], found[2], len(stores))

    try:
        found = asyncio.run(run())
    except _Ambiguous as exc:
        print(f"rdisplay: dlq show: {exc}", file=sys.stderr)
        return 2
    if found is None:
        print(f"rdisplay: no dead-letter entry {args.id}", file=sys.stderr)
        return 1
    partition, fields, count = found
    body = describe(args.id, fields)
    if count > 1:
        body["partition"] = partition
    sys.stdout.buffer.write(msgspec.json.format(_json.encode(body)) + b"\n")
    return 0


def cmd_redrive(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    async def run() -> int:
        missing = 0
        async with connected(settings, "dlq") as (redis, partitions):
            stores = _stores(redis, partitions, settings)
            chosen: list[tuple[int, DeadLetterStore, str]] = []
            if args.all:
                for index, store in enumerate(stores):
                    if args.partition is not None and index != args.partition:
                        continue
                    last = await store.last_id()
                    if last:
                        chosen += [(index, store, i) async for i, _ in store.entries(until=last)]
                chosen.sort(key=lambda item: parse_id(item[2]))
            else:
                found = await _find(stores, args.id, args.partition)
                if found is None:
                    _print({"id": args.id, "redriven": False, "reason": "no such entry"})
                    sys.stdout.flush()
                    return 1
                chosen = [(found[0], found[1], args.id)]
            fence = ReplicaFence(redis, replicas=settings.redis_wait_replicas, owner="rdisplay-dlq")
            for index, store, entry_id in chosen:
                new_id = await store.redrive(entry_id)
                if new_id is not None:
                    # REDIS_WAIT_REPLICAS: said only once k replicas hold it.
                    await fence.hold(partitions.spaces[index], deadline_s=FENCE_DEADLINE_S)
                line: dict[str, Any] = {"id": entry_id}
                if len(stores) > 1:
                    line["partition"] = index
                if new_id is None:
                    missing += 1
                    _print({**line, "redriven": False, "reason": "no such entry"})
                else:
                    _print({**line, "redriven": True, "entryId": new_id})
        sys.stdout.flush()
        return 1 if missing and not args.all else 0

    try:
        return asyncio.run(run())
    except _Ambiguous as exc:
        print(f"rdisplay: dlq redrive: {exc}", file=sys.stderr)
        return 2


def cmd_purge(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    async def count() -> tuple[int, list[str | None]]:
        async with connected(settings, "dlq") as (redis, partitions):
            total, lasts = 0, []
            for store in _stores(redis, partitions, settings):
                total += int(await redis.xlen(store.dead_letter))
                lasts.append(await store.last_id())
            return total, lasts

    total, lasts = asyncio.run(count())
    present = [one for one in lasts if one is not None]
    last = max(present, key=parse_id) if present else None
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
        deleted = 0
        async with connected(settings, "dlq") as (redis, partitions):
            for store, up_to in zip(_stores(redis, partitions, settings), lasts, strict=False):
                if up_to is not None:
                    deleted += await store.purge(up_to)
        return deleted

    deleted = asyncio.run(purge())
    _print({"deleted": deleted, "upTo": last})
    return 0
