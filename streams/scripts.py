"""Lua scripts shipped beside the code, registered on a client (EVALSHA with reload)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def script_source(package: str, name: str) -> str:
    """The text of `package/name` (a .lua file shipped with the code)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def load_script(redis: Redis, package: str, name: str) -> AsyncScript:
    """Register `package/name` (a .lua file) on `redis`."""
    return redis.register_script(script_source(package, name))
