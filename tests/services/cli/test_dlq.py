"""`rdisplay dlq`: list, show, redrive (once, even from two processes), purge."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections import Counter
from pathlib import Path

from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from streams.keys import Keyspace
from tests.conftest import SettingsFactory, WorkerRunner
from tests.edge_helpers import (
    ACCESS_SECRET,
    REFRESH_SECRET,
    connect,
    mint,
    running_edge,
    trigger_payload,
)
from tests.helpers import append_trigger, fast_failures, read_stream, trigger, wait_until
from tests.services.cli.test_replay import _read_one_line_then_close

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")


async def _cli(
    redis_url: str, keyspace: Keyspace, cwd: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}
    process = await asyncio.create_subprocess_exec(
        RDISPLAY,
        "dlq",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _dead_letter(
    redis: Redis, keyspace: Keyspace, order_service: OrderService, orders: list[str]
) -> list[str]:
    for order in orders:
        order_service.fail_next[order] = 1000
        await append_trigger(redis, keyspace, trigger(order_id=order))

    async def all_dead() -> bool:
        return int(await redis.xlen(keyspace.dead_letter)) == len(orders)

    await wait_until(all_dead)
    return [e.id for e in await read_stream(redis, keyspace.dead_letter)]


async def test_redrive_after_recovery_projects_exactly_once_and_tells_the_controller(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        JWT_SECRET=ACCESS_SECRET,
        JWT_REFRESH_SECRET=REFRESH_SECRET,
        **fast_failures(order_service.url),
    )
    await workers.start(settings)
    order_service.fail_next["ORD-9"] = 1000
    async with running_edge(settings) as edge:
        controller = await connect(edge.url, mint())
        try:
            payload = trigger_payload("ORD-9")
            first = await controller.emit("trigger", payload)
            assert first["code"] == "DEAD_LETTERED"
            [dead] = await read_stream(redis, keyspace.dead_letter)

            order_service.fail_next["ORD-9"] = 0  # the order service recovered
            code, out, _err = await _cli(redis_url, keyspace, tmp_path, "redrive", dead.id)
            assert code == 0
            assert json.loads(out)["redriven"] is True

            [result] = await controller.wait_for("trigger:result")
            assert result["id"] == payload["id"]
            assert result["success"] is True
            repeat = await controller.emit("trigger", payload)
            assert repeat["duplicate"] is True
            assert repeat["data"]["eventId"] == result["data"]["eventId"]
        finally:
            await controller.sio.disconnect()
    events = await read_stream(redis, keyspace.events)
    mine = [e.type for e in events if e.data.get("triggerId") == payload["id"]]
    assert mine == ["trigger.dead_lettered", "trigger.projected"]
    assert await redis.xlen(keyspace.dead_letter) == 0


async def test_concurrent_redrives_append_once(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
    tmp_path: Path,
) -> None:
    worker = await workers.start(make_settings(**fast_failures(order_service.url)))
    [dead_id] = await _dead_letter(redis, keyspace, order_service, ["twice"])
    await workers.stop(worker)  # nothing consumes: rd:triggers shows exactly what was appended
    before = int(await redis.xlen(keyspace.triggers))
    results = await asyncio.gather(
        *(_cli(redis_url, keyspace, tmp_path, "redrive", dead_id) for _ in range(4))
    )
    outcomes = Counter(json.loads(out)["redriven"] for _code, out, _err in results)
    assert outcomes == Counter({True: 1, False: 3})
    assert int(await redis.xlen(keyspace.triggers)) == before + 1
    last = (await read_stream(redis, keyspace.triggers))[-1]
    assert last.fields["redrivenFrom"] == dead_id
    assert "sourceId" not in last.fields  # the dead-letter bookkeeping stays behind


async def test_list_show_and_purge(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
    tmp_path: Path,
) -> None:
    await workers.start(make_settings(**fast_failures(order_service.url)))
    ids = await _dead_letter(redis, keyspace, order_service, ["a", "b", "c"])

    code, out, _ = await _cli(redis_url, keyspace, tmp_path, "list")
    listed = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [e["id"] for e in listed] == ids
    assert {e["reason"] for e in listed} == {"max_deliveries"}
    assert {e["data"]["orderId"] for e in listed} == {"a", "b", "c"}
    assert all(e["deliveries"] == 2 for e in listed)

    code, out, _ = await _cli(redis_url, keyspace, tmp_path, "show", ids[0])
    assert code == 0
    assert json.loads(out)["sourceId"]
    code, _, err = await _cli(redis_url, keyspace, tmp_path, "show", "1-1")
    assert code == 1
    assert "no dead-letter entry" in err

    code, _, err = await _cli(redis_url, keyspace, tmp_path, "purge")
    assert code == 2  # not a terminal, no --yes: refuses
    assert len(err.strip().splitlines()) == 1
    assert await redis.xlen(keyspace.dead_letter) == 3

    code, out, _ = await _cli(redis_url, keyspace, tmp_path, "purge", "--yes")
    assert code == 0
    assert json.loads(out)["deleted"] == 3
    assert await redis.xlen(keyspace.dead_letter) == 0


async def test_redrive_all(
    redis: Redis,
    keyspace: Keyspace,
    make_settings: SettingsFactory,
    workers: WorkerRunner,
    order_service: OrderService,
    redis_url: str,
    tmp_path: Path,
) -> None:
    # Two orders, two deliveries each: four failures, one short of opening the circuit.
    await workers.start(make_settings(**fast_failures(order_service.url)))
    more = await _dead_letter(redis, keyspace, order_service, ["d", "e"])
    for order in ("d", "e"):
        order_service.fail_next[order] = 0
    code, out, _ = await _cli(redis_url, keyspace, tmp_path, "redrive", "--all")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == more

    async def projected() -> bool:
        events = await read_stream(redis, keyspace.events)
        return sum(e.type == "trigger.projected" for e in events) == 2

    await wait_until(projected)


async def _purge_at_a_terminal(
    redis_url: str, keyspace: Keyspace, cwd: Path, answer: bytes
) -> tuple[int, str, str]:
    """`dlq purge` with a terminal on stdin that answers `answer` to its question."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}
    try:
        process = await asyncio.create_subprocess_exec(
            RDISPLAY,
            "dlq",
            "purge",
            env=env,
            cwd=cwd,
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        os.write(controller, answer)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        os.close(terminal)
        os.close(controller)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_purge_at_a_terminal_deletes_only_when_confirmed(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        await redis.xadd(keyspace.dead_letter, {"type": "trigger", "v": "1", "data": f"{i}"})

    code, out, err = await _purge_at_a_terminal(redis_url, keyspace, tmp_path, b"n\n")
    assert (code, out) == (1, "")
    assert "Delete 3 dead-letter entries" in err
    assert "nothing deleted" in err
    assert await redis.xlen(keyspace.dead_letter) == 3

    code, out, err = await _purge_at_a_terminal(redis_url, keyspace, tmp_path, b"y\n")
    assert code == 0, err
    assert json.loads(out)["deleted"] == 3  # stdout holds the result only, not the question
    assert await redis.xlen(keyspace.dead_letter) == 0


async def test_a_closed_stdout_ends_dlq_list_silently(
    redis: Redis, keyspace: Keyspace, redis_url: str, tmp_path: Path
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(5000):  # ~1.5 MB of lines: more than a pipe holds
            pipe.xadd(
                keyspace.dead_letter,
                {
                    "type": "trigger",
                    "v": "1",
                    "data": json.dumps({"id": f"t{i}", "pad": "x" * 200}),
                },
            )
        await pipe.execute()
    env = {**os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": keyspace.prefix}
    first, code, err = await asyncio.to_thread(
        _read_one_line_then_close, [RDISPLAY, "dlq", "list"], env, tmp_path
    )
    assert json.loads(first)["data"]["id"] == "t0"
    assert (code, err) == (0, b"")
