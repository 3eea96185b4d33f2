"""`rdisplay token issue`, run as the real console script."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from redis.asyncio import Redis

from services.config.jwt_keys import SECRETS_FILE, JwtSecrets
from services.edge.tokens import TokenService
from streams.keys import Keyspace
from tests.services.cli.test_cli import assert_one_line_error, run_cli


def stored_secrets(data_dir: Path) -> JwtSecrets:
    return msgspec.json.decode((data_dir / SECRETS_FILE).read_bytes(), type=JwtSecrets)


async def test_token_issue_prints_a_pair_the_service_accepts(
    tmp_path: Path, redis_url: str, redis: Redis, keyspace: Keyspace
) -> None:
    data_dir = tmp_path / "var"
    result = run_cli(
        "token",
        "issue",
        "--user",
        "user-1",
        "--screen",
        "screen-1",
        cwd=tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        DATA_DIR=str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    body = msgspec.json.decode(result.stdout)
    assert body.keys() == {"accessToken", "refreshToken", "expiresIn"}
    assert body["expiresIn"] == 900
    assert result.stdout.count("\n") == 1

    tokens = TokenService(secrets=stored_secrets(data_dir), redis=redis, keyspace=keyspace)
    claims = tokens.verify_access(body["accessToken"])
    assert (claims.user_id, claims.screen_id, claims.role) == ("user-1", "screen-1", "controller")
    assert claims.exp - claims.iat == 900
    # The refresh token was recorded under STREAM_PREFIX: it rotates once.
    rotated = await tokens.rotate(body["refreshToken"], "screen-1")
    assert tokens.verify_access(rotated.access_token).role == "controller"


def test_token_issue_with_role_and_ttl(
    tmp_path: Path, redis_url: str, redis: Redis, keyspace: Keyspace
) -> None:
    data_dir = tmp_path / "var"
    result = run_cli(
        "token",
        "issue",
        "--user=ops",
        "--screen=lobby",
        "--role=admin",
        "--ttl=60",
        cwd=tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        DATA_DIR=str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    body = msgspec.json.decode(result.stdout)
    assert body["expiresIn"] == 60
    tokens = TokenService(secrets=stored_secrets(data_dir), redis=redis, keyspace=keyspace)
    claims = tokens.verify_access(body["accessToken"])
    assert (claims.user_id, claims.screen_id, claims.role) == ("ops", "lobby", "admin")
    assert claims.exp - claims.iat == 60


def test_configured_secrets_are_used(
    tmp_path: Path, redis_url: str, redis: Redis, keyspace: Keyspace
) -> None:
    secrets = JwtSecrets(access="a" * 40, refresh="b" * 40)
    result = run_cli(
        "token",
        "issue",
        "--user=u",
        "--screen=s",
        cwd=tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        DATA_DIR=str(tmp_path / "var"),
        JWT_SECRET=secrets.access,
        JWT_REFRESH_SECRET=secrets.refresh,
    )
    assert result.returncode == 0, result.stderr
    tokens = TokenService(secrets=secrets, redis=redis, keyspace=keyspace)
    assert tokens.verify_access(msgspec.json.decode(result.stdout)["accessToken"]).user_id == "u"
    assert not (tmp_path / "var" / SECRETS_FILE).exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--role", "root"], id="unknown-role"),
        pytest.param(["--ttl", "0"], id="zero-ttl"),
        pytest.param(["--ttl", "soon"], id="word-ttl"),
        pytest.param(["--ttl", "86401"], id="ttl-over-a-day"),
        pytest.param(["--user", ""], id="empty-user"),
        pytest.param(["--url", "127.0.0.1:3001"], id="url-without-scheme"),
        pytest.param(["--url", "http://h/?x=1"], id="url-with-query"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, redis_url: str, args: list[str]) -> None:
    base = {"--user": "user-1", "--screen": "screen-1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [part for pair in base.items() for part in pair]
    result = run_cli("token", "issue", *argv, cwd=tmp_path, REDIS_URL=redis_url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: rdisplay token issue" in result.stderr
    assert not (tmp_path / "var").exists()


def test_token_issue_without_redis_url_is_one_line(tmp_path: Path) -> None:
    result = run_cli("token", "issue", "--user", "u", "--screen", "s", cwd=tmp_path)
    assert_one_line_error(result, "token issue needs REDIS_URL")


@pytest.mark.parametrize(
    ("role", "page"), [("screen", "/screen"), ("controller", "/controller"), ("admin", "/operator")]
)
def test_token_issue_url_prints_the_pages_link_with_the_tokens_in_the_fragment(
    tmp_path: Path, redis_url: str, keyspace: Keyspace, role: str, page: str
) -> None:
    data_dir = tmp_path / "var"
    result = run_cli(
        "token",
        "issue",
        "--user=u1",
        "--screen=lobby",
        f"--role={role}",
        "--url=http://kiosk.local:3001/",
        cwd=tmp_path,
        REDIS_URL=redis_url,
        STREAM_PREFIX=keyspace.prefix,
        DATA_DIR=str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    link = urlsplit(result.stdout.strip())
    assert (link.scheme, link.netloc, link.path, link.query) == (
        "http",
        "kiosk.local:3001",
        page,
        "",
    )
    fragment = parse_qs(link.fragment)
    assert fragment.keys() == {"access", "refresh"}
    secrets = stored_secrets(data_dir)
    claims = TokenService(secrets=secrets, redis=Redis(), keyspace=keyspace).verify_access(
        fragment["access"][0]
    )
    assert (claims.screen_id, claims.role) == ("lobby", role)
