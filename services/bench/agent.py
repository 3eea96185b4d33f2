"""One load-generator process: its share of the controllers and screens, and its share of the
schedule (trigger n goes to agent n mod K).

The parent talks to it over a pipe: the agent says `("ready", None)` once its clients are
connected, then answers `("run", RunSpec)` with an `AgentReport` and `("collect", None)` with
the `Displays` its screens saw since the last collect; `("stop", None)` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from services.bench.plan import (
    FAILED,
    SEND_ERROR,
    TIMEOUT,
    UNANSWERED,
    AgentReport,
    BenchConfig,
    BenchError,
    Displays,
    RunSpec,
    TriggerRecord,
)
from services.client import Controller, Screen

logger = logging.getLogger(__name__)

_CONNECT_BATCH = 25


def agent_main(
    index: int, config: BenchConfig, conn: Connection, progress: SynchronizedArray[Any]
) -> None:
    """The entry point of agent process `index` (multiprocessing target)."""
    _runner()(_serve(index, config, conn, progress))


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run
    return uvloop.run


async def _serve(
    index: int, config: BenchConfig, conn: Connection, progress: SynchronizedArray[Any]
) -> None:
    agent = Agent(index, config, progress)
    try:
        await agent.connect()
    except Exception as exc:
        conn.send(("error", f"agent {index}: {exc!r}"))
        await agent.close()
        return
    conn.send(("ready", None))
    try:
        while True:
            verb, arg = await asyncio.to_thread(conn.recv)
            if verb == "run":
                conn.send(("report", await agent.run(arg)))
            elif verb == "collect":
                conn.send(("displays", agent.collect()))
            else:
                break
    finally:
        await agent.close()


class Agent:
    """Controllers j and screens j with j mod K = index, connected once, used for every run."""

    def __init__(self, index: int, config: BenchConfig, progress: SynchronizedArray[Any]) -> None:
        self.index = index
        self.config = config
        self.progress = progress
        self.controllers: list[Controller] = []
        self.screens: list[Screen] = []
        self.arrivals: dict[str, float] = {}
        self.results: dict[str, tuple[float, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._result_came = asyncio.Event()

    async def connect(self) -> None:
        config, k = self.config, self.config.procs
        for j in range(self.index, config.controllers, k):
            controller = Controller(config.url_for(j), config.controller_token(j))
            controller.sio.on("trigger:result", self._on_result)
            self.controllers.append(controller)
        if config.protocol == "rdisplay":
            for j in range(self.index, config.screens, k):
                self.screens.append(Screen(config.url_for(j), config.screen_token(j)))
                self.screens[-1].on_display = self._on_display
        clients: list[Controller | Screen] = [*self.screens, *self.controllers]
        for i in range(0, len(clients), _CONNECT_BATCH):
            batch = clients[i : i + _CONNECT_BATCH]
            await asyncio.gather(*(c.connect(config.connect_timeout_s) for c in batch))
        if not self.controllers:
            msg = f"agent {self.index} has no controller: use --controllers ≥ --procs"
            raise BenchError(msg)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        clients: list[Controller | Screen] = [*self.controllers, *self.screens]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def _on_result(self, ack: Any) -> None:
        if isinstance(ack, dict):
            self.results.setdefault(str(ack.get("id")), (time.monotonic(), _code(ack)))
            self._result_came.set()

    async def _on_display(self, display: dict[str, Any]) -> dict[str, Any]:
        self.arrivals.setdefault(str(display.get("triggerId")), time.monotonic())
        return {"status": "shown"}

    def collect(self) -> Displays:
        arrivals, self.arrivals = self.arrivals, {}
        for screen in self.screens:
            screen.displays.clear()  # the client keeps every display; a sweep would pile them up
        return Displays(arrivals)

    async def run(self, spec: RunSpec) -> AgentReport:
        self.results.clear()
        k = self.config.procs
        mine = range(self.index, spec.warmup + spec.count, k)
        outcome: dict[int, tuple[str, float, float, str, float | None]] = {}
        sent = 0
        answered = 0

        async def one(n: int, controller: Controller) -> None:
            nonlocal answered
            trigger_id = str(uuid.uuid4())
            payload = {
                "id": trigger_id,
                "orderId": f"bench-{n}",
                "displayIndex": 0,
                "timestamp": int(time.time() * 1000),
            }
            sent_at = time.monotonic()
            try:
                ack = await controller.send(payload, wait_s=self.config.ack_timeout_s)
                code = _code(ack)
            except Exception as exc:
                code = TIMEOUT if "Timeout" in type(exc).__name__ else SEND_ERROR
            now = time.monotonic()
            answered += 1
            outcome[n] = (trigger_id, sent_at, now, code, None if code in UNANSWERED else now)

        position = 0
        local = len(self.controllers)
        while position < len(mine):
            now = time.monotonic()
            while position < len(mine) and spec.due(mine[position]) <= now:
                n = mine[position]
                controller = self.controllers[(n // k) % local]
                task = asyncio.create_task(one(n, controller))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                position += 1
                sent += 1
            self.progress[2 * self.index] = sent
            self.progress[2 * self.index + 1] = answered
            if position < len(mine):
                await asyncio.sleep(max(spec.due(mine[position]) - time.monotonic(), 0))
        while self._tasks:
            await asyncio.wait(set(self._tasks), timeout=0.25)
            self.progress[2 * self.index + 1] = answered
        records = await self._drain(spec, outcome)
        self.progress[2 * self.index + 1] = answered
        return AgentReport(records)

    async def _drain(
        self, spec: RunSpec, outcome: dict[int, tuple[str, float, float, str, float | None]]
    ) -> list[TriggerRecord]:
        """Final answers for first answers that were not final: a `trigger:result` within the
        drain period, else what `trigger:status` says (rdisplay only; the seed has neither)."""
        k, local = self.config.procs, len(self.controllers)
        open_ = {n: o for n, o in outcome.items() if n >= spec.warmup and o[4] is None}
        if open_ and self.config.protocol == "rdisplay":
            deadline = time.monotonic() + self.config.drain_s
            waiting = {o[0] for o in open_.values()}
            while waiting - self.results.keys() and time.monotonic() < deadline:
                self._result_came.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._result_came.wait(), deadline - time.monotonic())
            for n, (trigger_id, _s, _a, _c, _t) in open_.items():
                if trigger_id in self.results:
                    continue
                controller = self.controllers[(n // k) % local]
                try:
                    reply = await asyncio.wait_for(controller.status(trigger_id), 5)
                except Exception as exc:  # it stays unanswered: counted as lost below
                    logger.info("trigger:status probe failed", extra={"error": repr(exc)})
                    continue
                code = _code(reply)
                if code not in UNANSWERED:
                    self.results[trigger_id] = (time.monotonic(), code)
        records = []
        for n, (trigger_id, sent_at, _acked, first, answered_at) in sorted(outcome.items()):
            if n < spec.warmup:
                continue
            code = first
            if answered_at is None and trigger_id in self.results:
                answered_at, code = self.results[trigger_id]
            records.append(
                TriggerRecord(trigger_id, spec.due(n), sent_at, first, code, answered_at)
            )
        return records


def _code(ack: Any) -> str:
    if not isinstance(ack, dict):
        return FAILED
    if ack.get("success") is True:
        return "OK"
    return str(ack.get("code") or FAILED)
