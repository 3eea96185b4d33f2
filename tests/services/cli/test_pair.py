"""`rdisplay pair approve` against a real store: the device's poll then gets working tokens."""

from __future__ import annotations

from pathlib import Path

import msgspec
from redis.asyncio import Redis

from services.edge.pairing import PairingService
from services.edge.tokens import TokenService
from streams.keys import Keyspace
from tests.services.cli.test_cli import run_cli
from tests.services.cli.test_token import stored_secrets


async def test_pair_approve_hands_the_device_its_tokens(
    tmp_path: Path, redis_url: str, redis: Redis, keyspace: Keyspace
) -> None:
    data_dir = tmp_path / "var"
    env = {"REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix, "DATA_DIR": str(data_dir)}
    # The first CLI call writes the development secrets the service below shares.
    run_cli("token", "issue", "--user", "u", "--screen", "s", cwd=tmp_path, **env)
    tokens = TokenService(secrets=stored_secrets(data_dir), redis=redis, keyspace=keyspace)
    pairing = PairingService(redis=redis, keyspace=keyspace, tokens=tokens)
    started = await pairing.request("controller")

    args = ("pair", "approve", started.code, "--screen", "line-2", "--user", "scanner-9")
    result = run_cli(*args, cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert msgspec.json.decode(result.stdout) == {
        "status": "approved",
        "role": "controller",
        "screenId": "line-2",
    }
    status, approved = await pairing.poll(started.pairing_id)
    assert status == "approved"
    assert approved is not None
    claims = tokens.verify_access(approved.access_token)
    assert (claims.user_id, claims.screen_id, claims.role) == ("scanner-9", "line-2", "controller")
    assert approved.access_token not in result.stdout + result.stderr  # never printed

    # Used: a second approval is one line and exit 1.
    again = run_cli(*args, cwd=tmp_path, **env)
    assert again.returncode == 1
    assert "no pairing waits for this code" in again.stderr
    assert "Traceback" not in again.stderr
