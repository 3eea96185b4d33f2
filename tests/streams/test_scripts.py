"""`streams.scripts.Script`: every shipped script compiles with its names; broken contracts fail
when a script is first used, never half-way through a production call."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from schemas.errors import ContractError
from services.analytics.rebuild import APPLY
from services.edge.desk import ADMIT, WINDOW_COUNT
from services.edge.tokens import ROTATE
from services.worker.commit import COMMIT
from streams.consumer import DELETE_IDLE_CONSUMER, RECLAIM
from streams.dead_letter import REDRIVE
from streams.keys import Keyspace
from streams.lease import RELEASE, RENEW
from streams.scripts import Script

SHIPPED = [
    ADMIT,
    WINDOW_COUNT,
    ROTATE,
    COMMIT,
    RECLAIM,
    DELETE_IDLE_CONSUMER,
    REDRIVE,
    RENEW,
    RELEASE,
    APPLY,
]


@pytest.mark.parametrize("script", SHIPPED, ids=repr)
async def test_every_shipped_script_has_its_names_and_compiles(
    redis: Redis, script: Script
) -> None:
    assert "@@" not in script.source  # every placeholder filled in
    # SCRIPT LOAD compiles the Lua: a syntax error fails here, with the server's message.
    assert await redis.script_load(script.source) == script.sha


def test_a_name_the_script_uses_but_python_does_not_give_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="no value from Python for @@NONCE"):
        _ = Script("tests.streams", "incrby.lua").source


def test_a_value_that_is_not_a_plain_name_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="not a plain name"):
        _ = Script("tests.streams", "incrby.lua", NONCE="x' .. redis.call('FLUSHALL') .. '").source


async def test_a_script_the_server_forgot_is_loaded_again(redis: Redis, keyspace: Keyspace) -> None:
    script = Script("tests.streams", "incrby.lua", NONCE=uuid.uuid4().hex)  # never loaded
    assert await script(redis, keys=[keyspace.key("n")], args=[3]) == 3
    assert await script(redis, keys=[keyspace.key("n")], args=[4]) == 7
