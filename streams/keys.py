"""Key names under the configured prefix."""

from __future__ import annotations

import msgspec

_json = msgspec.json.Encoder()


class Keyspace:
    """Names every key of one deployment (`STREAM_PREFIX`, `rd` by default)."""

    __slots__ = ("dead_letter", "events", "prefix", "triggers")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.triggers = f"{prefix}:triggers"
        self.events = f"{prefix}:events"
        self.dead_letter = f"{prefix}:dead-letter"

    def key(self, *parts: str) -> str:
        """A key made of plain parts: `key("screen", "s1")` → `rd:screen:s1`."""
        return ":".join((self.prefix, *parts))

    def compound(self, kind: str, *values: str) -> str:
        """A key whose values may hold any character, kept unambiguous as a JSON array."""
        return f"{self.prefix}:{kind}:{_json.encode(list(values)).decode()}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this keyspace."""
        return f"{self.prefix}:*"
