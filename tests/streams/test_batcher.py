"""Auto-pipelining against a real server: coalescing, script reload, per-command errors."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streams.batcher import PipelineBatcher
from streams.keys import Keyspace
from streams.scripts import Script


async def test_concurrent_commands_share_round_trips(redis: Redis, keyspace: Keyspace) -> None:
    batcher = PipelineBatcher(redis)
    key = keyspace.key("counter")
    results = await asyncio.gather(*(batcher.execute("INCR", key) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert batcher.commands == 200
    assert batcher.round_trips < 20  # the first goes alone, the rest ride together


async def test_an_unloaded_script_is_loaded_and_run(redis: Redis, keyspace: Keyspace) -> None:
    batcher = PipelineBatcher(redis)
    # A source no server has seen: its first EVALSHA answers NOSCRIPT.
    script = Script("tests.streams", "incrby.lua", NONCE=uuid.uuid4().hex)
    first, second = await asyncio.gather(
        batcher.evalsha(script, [keyspace.key("n")], [5]),
        batcher.evalsha(script, [keyspace.key("n")], [7]),
    )
    assert sorted([first, second]) == [5, 12]


async def test_one_failing_command_fails_only_its_caller(redis: Redis, keyspace: Keyspace) -> None:
    batcher = PipelineBatcher(redis)
    await redis.set(keyspace.key("text"), "not a number")
    good: object
    bad: object
    good, bad = await asyncio.gather(
        batcher.execute("INCR", keyspace.key("ok")),
        batcher.execute("INCR", keyspace.key("text")),
        return_exceptions=True,
    )
    assert good == 1
    assert isinstance(bad, ResponseError)
    with pytest.raises(ResponseError):
        await batcher.execute("INCR", keyspace.key("text"))
