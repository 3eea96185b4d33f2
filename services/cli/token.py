"""`rdisplay token issue` (SPEC section 8): an access/refresh pair as `/api/auth/refresh` gives."""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlencode, urlsplit

import msgspec

from services.cli.common import TermFlag, identifier, store_url, write_stdout
from services.config.jwt_keys import JwtSecrets, resolve_secrets
from services.config.settings import Settings
from services.edge.tokens import ACCESS_TTL_S, REFRESH_TTL_S, ROLES, TokenPair, TokenService
from streams.connections import detect_cluster, redis_client
from streams.keys import Keyspace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="issue tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    issue = token_sub.add_parser(
        "issue",
        help="print {accessToken, refreshToken, expiresIn} as JSON (needs REDIS_URL or a "
        "running `rdisplay serve` on DATA_DIR)",
    )
    issue.add_argument("--user", required=True, type=identifier, help="the userId claim")
    issue.add_argument("--screen", required=True, type=identifier, help="the screenId claim")
    issue.add_argument("--role", default="controller", choices=ROLES, help="default: controller")
    issue.add_argument(
        "--ttl",
        type=_lifetime,
        default=ACCESS_TTL_S,
        metavar="SECONDS",
        help=f"access token lifetime (default {ACCESS_TTL_S})",
    )
    issue.add_argument(
        "--url",
        metavar="BASE",
        type=_base_url,
        help="print a link instead of JSON: BASE/screen, /controller or /operator (by role) "
        "with the tokens in the fragment, e.g. --url http://127.0.0.1:3001",
    )
    issue.set_defaults(func=cmd_token_issue)


PAGES = {"screen": "/screen", "controller": "/controller", "admin": "/operator"}


def cmd_token_issue(settings: Settings, args: argparse.Namespace, _term: TermFlag) -> int:
    # The refresh token is recorded in the store of the edges that will accept it: REDIS_URL,
    # or the embedded Valkey of the `serve` running on DATA_DIR (never a throw-away one).
    url = store_url(settings, "token issue")
    secrets = resolve_secrets(settings)
    pair = asyncio.run(_issue_pair(url, settings, secrets, args))
    if args.url is None:
        write_stdout(msgspec.json.encode(pair) + b"\n")
    else:
        # The fragment never reaches a server or its logs; the page stores the tokens and
        # takes them out of the address bar (SPEC 10).
        fragment = urlencode({"access": pair.access_token, "refresh": pair.refresh_token})
        link = f"{args.url}{PAGES[args.role]}#{fragment}"
        write_stdout(link.encode() + b"\n")
    return 0


async def _issue_pair(
    redis_url: str, settings: Settings, secrets: JwtSecrets, args: argparse.Namespace
) -> TokenPair:
    cluster = await detect_cluster(redis_url)
    redis = redis_client(redis_url, cluster=cluster)
    try:
        tokens = TokenService(
            secrets=secrets,
            redis=redis,
            keyspace=Keyspace(settings.stream_prefix),
            cluster=cluster,
        )
        return await tokens.issue_pair(args.user, args.screen, args.role, ttl_s=args.ttl)
    finally:
        await redis.aclose()


def _lifetime(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        msg = f"`{raw}` is not a whole number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if not 1 <= value <= REFRESH_TTL_S:
        msg = f"`{raw}` is out of range: use 1 to {REFRESH_TTL_S} seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        msg = f"`{raw}` is not an address like http://127.0.0.1:3001"
        raise argparse.ArgumentTypeError(msg)
    return raw.rstrip("/")
