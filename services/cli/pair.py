"""`rdisplay pair approve CODE --screen S [--user U]` (SPEC 8, 10): approve a device's pairing
code as an operator would on /operator. Someone with the machine's shell and the store is
the admin here."""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from schemas.errors import RemoteDisplayError
from services.cli.common import TermFlag, identifier, store_url, write_stdout
from services.config.jwt_keys import resolve_secrets
from services.config.settings import Settings
from services.edge.pairing import PairingError, PairingService
from services.edge.tokens import TokenService
from streams.connections import detect_cluster, redis_client
from streams.keys import Keyspace


class PairCommandError(RemoteDisplayError):
    """The code could not be approved (the message says why)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pair = sub.add_parser("pair", help="pair devices")
    pair_sub = pair.add_subparsers(dest="pair_command", required=True, metavar="COMMAND")
    approve = pair_sub.add_parser(
        "approve",
        help="approve the pairing code a screen or controller shows (needs REDIS_URL or a "
        "running `rdisplay serve` on DATA_DIR)",
    )
    approve.add_argument("code", help="the 8-character code the device shows")
    approve.add_argument("--screen", required=True, type=identifier, help="the screenId")
    approve.add_argument("--user", type=identifier, default=None, help="the userId (default: new)")
    approve.set_defaults(func=cmd_pair_approve)


def cmd_pair_approve(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    url = store_url(settings, "pair approve")
    role = asyncio.run(_approve(url, settings, args))
    write_stdout(
        msgspec.json.encode({"status": "approved", "role": role, "screenId": args.screen}) + b"\n"
    )
    return 0


async def _approve(redis_url: str, settings: Settings, args: argparse.Namespace) -> str:
    cluster = await detect_cluster(redis_url)
    redis = redis_client(redis_url, cluster=cluster)
    keyspace = Keyspace(settings.stream_prefix)
    try:
        tokens = TokenService(
            secrets=resolve_secrets(settings), redis=redis, keyspace=keyspace, cluster=cluster
        )
        pairing = PairingService(redis=redis, keyspace=keyspace, tokens=tokens)
        try:
            return await pairing.approve(args.code, args.screen, args.user)
        except PairingError as exc:
            raise PairCommandError(str(exc)) from None
    finally:
        await redis.aclose()
