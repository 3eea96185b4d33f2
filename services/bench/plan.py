"""What a bench run is: its configuration, the schedule handed to each agent, what comes back.

Everything here crosses a process boundary (multiprocessing pickles it), so it is plain data.
Times are `time.monotonic()` seconds: on Linux and macOS that clock is system-wide, so the
parent's start time means the same instant in every agent.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from schemas.errors import RemoteDisplayError

Protocol = Literal["rdisplay", "seed"]
PROTOCOLS: tuple[Protocol, ...] = ("rdisplay", "seed")

TIMEOUT = "TIMEOUT"
"""No ack within the bench's ack timeout."""
SEND_ERROR = "SEND_ERROR"
"""The send itself failed (not connected)."""
FAILED = "FAILED"
"""The seed's failure ack (`{id, success: false, error}`, it has no codes)."""
UNANSWERED = frozenset({"PENDING", TIMEOUT, SEND_ERROR})
"""First answers that are not final: the drain asks `trigger:status` about them."""


class BenchError(RemoteDisplayError):
    """The load generator could not run (a client could not connect, an agent died)."""


@dataclass(frozen=True)
class BenchConfig:
    """Who connects where. Controller j targets screen j mod M (its token's `screenId`).

    `url` may name several edges of one system, comma-separated: client j of each kind
    connects to edge j mod (number of edges), so a screen's displays often come from
    another edge than its controller's (every edge reads every event).
    """

    url: str
    protocol: Protocol = "rdisplay"
    controllers: int = 200
    screens: int = 200
    procs: int = 1
    secret: str | None = None
    controller_tokens: tuple[str, ...] = ()
    screen_tokens: tuple[str, ...] = ()
    ack_timeout_s: float = 10.0
    drain_s: float = 5.0
    connect_timeout_s: float = 20.0
    tag: str = ""

    def url_for(self, j: int) -> str:
        urls = [u.strip() for u in self.url.split(",") if u.strip()]
        return urls[j % len(urls)]

    def controller_token(self, j: int) -> str:
        if self.controller_tokens:
            return self.controller_tokens[j]
        return self._mint(
            f"bench-{self.tag}-u{j}", self._screen_id(j % max(self.screens, 1)), "controller"
        )

    def screen_token(self, j: int) -> str:
        if self.screen_tokens:
            return self.screen_tokens[j]
        return self._mint(f"bench-{self.tag}-d{j}", self._screen_id(j), "screen")

    def _screen_id(self, j: int) -> str:
        return f"bench-{self.tag}-s{j}"

    def _mint(self, user: str, screen: str, role: str) -> str:
        # SPEC section 4: any HS256 token signed with JWT_SECRET carrying these claims is
        # accepted, so the bench needs the secret only, never the system's Redis.
        if self.secret is None:
            msg = "the bench needs --secret or --tokens to connect"
            raise BenchError(msg)
        now = int(time.time())
        claims: dict[str, Any] = {"userId": user, "screenId": screen, "iat": now, "exp": now + 900}
        if self.protocol == "rdisplay":
            claims.update(role=role, typ="access", jti=str(uuid.uuid4()))
        return jwt.encode(claims, self.secret, "HS256")


@dataclass(frozen=True)
class RunSpec:
    """One open-loop run: trigger n (0-based) is due at `start + n / rate`; the first
    `warmup` of them are not counted. Agent i of K sends the triggers with n mod K = i."""

    rate: float
    start: float
    warmup: int
    count: int

    def due(self, n: int) -> float:
        return self.start + n / self.rate


@dataclass(frozen=True)
class TriggerRecord:
    """One counted trigger. `answered_at` is when its final answer came (ack, `trigger:result`
    or `trigger:status`); None when it never got one."""

    trigger_id: str
    scheduled: float
    sent_at: float
    first_code: str
    code: str
    answered_at: float | None


@dataclass(frozen=True)
class AgentReport:
    records: list[TriggerRecord]


@dataclass(frozen=True)
class Displays:
    """`display` arrivals seen by one agent's screens: trigger id → first arrival time."""

    arrivals: dict[str, float]
