"""The worker's commit: the one atomic step per batch (commit.lua), and its contract with Python.

Each entry of a batch becomes an `Op` (its event, result record and projection effects);
`commit` sends every op of the batch to `commit.lua` in one EVALSHA, which XACKs each entry and
writes its effects only if that XACK removed it and its result is not yet recorded: delivery
may happen twice, effects happen once (SPEC 6). The names both sides use come from Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from schemas import codec
from schemas.entries import SCHEMA_VERSION
from schemas.errors import ContractError
from schemas.events import (
    EVENT_TYPES,
    DisplayAcknowledged,
    TriggerDeadLettered,
    TriggerProjected,
    TriggerRejected,
)
from services.keys import IDEMPOTENCY_TTL_S, LUA_NAMES
from streams.keys import Keyspace
from streams.scripts import Script
from streams.values import as_text

_KIND = {cls: name for name, cls in EVENT_TYPES.items()}
PROJECTED = _KIND[TriggerProjected]
REJECTED = _KIND[TriggerRejected]
DEAD_LETTERED = _KIND[TriggerDeadLettered]
ACKNOWLEDGED = _KIND[DisplayAcknowledged]

COMMIT = Script(
    "services.worker",
    "commit.lua",
    **LUA_NAMES,
    KIND_PROJECTED=PROJECTED,
    KIND_REJECTED=REJECTED,
    KIND_DEAD_LETTERED=DEAD_LETTERED,
    KIND_ACKNOWLEDGED=ACKNOWLEDGED,
    SCHEMA_VERSION=str(SCHEMA_VERSION),
    TYPE_FIELD=codec.TYPE_FIELD,
    VERSION_FIELD=codec.VERSION_FIELD,
    DATA_FIELD=codec.DATA_FIELD,
)

# The dead-letter id is known only inside the commit (its XADD makes it): the event's data goes
# to the script cut where the id belongs, and the script appends the id and `"}`.
_DEAD_LETTER_TAIL = b'"deadLetterId":""}'
_DEAD_LETTER_CLOSE = b'"}'


@dataclass(frozen=True, slots=True)
class Op:
    """One entry's effects, as the commit script takes them.

    `args` by kind: PROJECTED the event's data when the screen already shows a newer trigger
    (`superseded: true`); DEAD_LETTERED the dead-letter entry's field/value pairs (and `data`
    cut by `cut_before_dead_letter_id`); ACKNOWLEDGED the acked event id, status, ackedAt,
    error.
    """

    kind: str
    entry_id: str
    data: bytes
    extra: tuple[bytes, ...] = ()
    args: tuple[bytes, ...] = ()
    result_key: str = ""
    screen_key: str = ""


@dataclass(frozen=True, slots=True)
class Committed:
    """Per op, in order: `written`, `duplicate` or `skipped`, and the event id written."""

    statuses: list[str]
    event_ids: list[str]


async def commit(
    redis: Redis, keyspace: Keyspace, *, group: str, maxlen: int, ops: Sequence[Op]
) -> Committed:
    keys: list[str] = [keyspace.triggers, keyspace.events, keyspace.dead_letter]
    args: list[bytes | str | int] = [group, maxlen, IDEMPOTENCY_TTL_S]
    for op in ops:
        # No key: the source stream's name stands for it (one slot on a cluster, see the script).
        keys += (op.result_key or keyspace.triggers, op.screen_key or keyspace.triggers)
        args += (op.kind, op.entry_id, op.data, len(op.extra) // 2, *op.extra)
        args += (len(op.args), *op.args)
    reply = await COMMIT(redis, keys=keys, args=args)
    return Committed([as_text(s) for s in reply[::2]], [as_text(e) for e in reply[1::2]])


def cut_before_dead_letter_id(data: bytes) -> bytes:
    """`data` without its empty `deadLetterId` value's closing: `...,"deadLetterId":"`."""
    if not data.endswith(_DEAD_LETTER_TAIL):  # a field added after it, or renamed
        msg = (
            "TriggerDeadLettered must encode deadLetterId last (the commit script appends the "
            f"dead-letter id there); it encodes as {data[-60:]!r}"
        )
        raise ContractError(msg)
    return data[: -len(_DEAD_LETTER_CLOSE)]
