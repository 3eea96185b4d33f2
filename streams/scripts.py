"""Lua scripts: one way to ship, load and run them.

Every script is a `.lua` file beside the code that uses it, run by its SHA1 (`EVALSHA`, loaded
again when the server answers NOSCRIPT: after a restart or a failover). Names a script shares
with Python (hash fields, entry fields) are written `@@NAME` in the file and given by Python
when the `Script` is declared (a shared table of names may give more than one script uses),
so each is defined once; a placeholder without a value, or a value that is not a plain name,
is a `ContractError` when the script is first used.

    COMMIT = Script("services.worker", "commit.lua", PENDING_FIELD=PENDING_FIELD)
    reply = await COMMIT(redis, keys=[...], args=[...])  # or batcher.evalsha(COMMIT, ...)
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from functools import cached_property
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.errors import ContractError

Arg = str | bytes | int | float
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


class _LuaTemplate(string.Template):
    delimiter = "@@"  # `$` is Lua's end-of-pattern anchor; `@@` appears in no Lua syntax


class Script:
    """A Lua file of `package`, with its `@@NAME` placeholders filled from `names`."""

    def __init__(self, package: str, name: str, **names: str) -> None:
        self.package = package
        self.name = name
        self._names = names

    @cached_property
    def source(self) -> str:
        text = resources.files(self.package).joinpath(self.name).read_text(encoding="utf-8")
        for key, value in self._names.items():
            if not _PLAIN_NAME.fullmatch(value):
                msg = f"{self.name}: @@{key} = {value!r} is not a plain name"
                raise ContractError(msg)
        template = _LuaTemplate(text)
        if not template.is_valid():
            msg = f"{self.name}: an @@ that is not followed by a NAME"
            raise ContractError(msg)
        missing = set(template.get_identifiers()) - set(self._names)
        if missing:
            msg = f"{self.name}: no value from Python for @@{', @@'.join(sorted(missing))}"
            raise ContractError(msg)
        return template.substitute(self._names)

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, redis: Redis, *, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run it on `redis` (one round trip; two after the server lost its scripts)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.package}/{self.name})"
