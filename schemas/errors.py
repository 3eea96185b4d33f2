"""The error hierarchy shared by every package."""

from __future__ import annotations


class RemoteDisplayError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(RemoteDisplayError, ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


class PoisonEntryError(RemoteDisplayError, ValueError):
    """A stream entry that no retry can fix: unknown type or version, undecodable data."""


class InvalidEntryError(RemoteDisplayError, ValueError):
    """A known, decodable entry whose data does not match its schema."""

    def __init__(self, message: str, *, raw: dict[str, object]) -> None:
        super().__init__(message)
        self.raw = raw


class ReplayRangeError(RemoteDisplayError, ValueError):
    """A replay bound that is neither an ISO-8601 time nor a stream entry id."""


class StoreUnavailableError(RemoteDisplayError, ConnectionError):
    """Redis/Valkey did not answer for longer than a service can wait at start."""


class ContractError(RemoteDisplayError, RuntimeError):
    """Code of this project broke one of its own contracts (a Lua script's arguments, an
    encoded layout): a bug to report, never the user's input."""


class UsageError(RemoteDisplayError, ValueError):
    """A function of this project called with an argument it cannot take (the caller's bug):
    the message names the argument, its value and what it may be."""
