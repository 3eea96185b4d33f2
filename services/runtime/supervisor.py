"""`rdisplay serve` on every core: the edge and the worker as processes of their own.

One Python process runs one core; the edge and the worker in one process capped `serve` at one
core while the others idled. The supervisor starts `rdisplay edge` and `rdisplay worker` as
children with this process's environment (plus the store's URL and a shared metrics
directory, so the edge's /metrics counts the worker's too), restarts a child that dies (a
crash loses nothing: its entries stay pending and are reclaimed), and on SIGTERM stops them
all within the 10 s SPEC 3 allows: SIGTERM each, wait, SIGKILL what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import multiprocess

from schemas.errors import RemoteDisplayError
from services.config.settings import Settings

logger = logging.getLogger(__name__)

STOP_WAIT_S = 7.0
"""A child gets this long after SIGTERM before SIGKILL (the embedded Valkey stops after)."""
RESTART_DELAY_S = 1.0
MAX_RESTARTS_PER_MINUTE = 5
STARTUP_S = 10.0
"""A child that ends this soon after it started could not start (its port taken, a bad
setting): restarting would only repeat that, so `serve` stops with its reason."""


class SupervisorError(RemoteDisplayError):
    """A child kept dying: `serve` gives up rather than restart it in a loop."""


@dataclass
class Child:
    role: str
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: list[float] = field(default_factory=list)


async def supervise(
    settings: Settings, *, redis_url: str, stop: asyncio.Event, workers: int = 1
) -> None:
    """Run the edge and `workers` workers as children until `stop` is set."""
    metrics_dir = settings.data_dir.resolve() / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    children = [Child("edge"), *(Child("worker") for _ in range(workers))]
    try:
        for child in children:
            await _start(child, env)
        await _watch(children, env, stop, metrics_dir)
    finally:
        await _stop_all(children)
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _start(child: Child, env: dict[str, str]) -> None:
    child.process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        child.role,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
    )
    child.started = time.monotonic()
    logger.info("started", extra={"role": child.role, "pid": child.process.pid})


async def _watch(
    children: list[Child], env: dict[str, str], stop: asyncio.Event, metrics_dir: Path
) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            waits = {
                asyncio.ensure_future(child.process.wait()): child
                for child in children
                if child.process is not None
            }
            done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
            for future in waits:
                if future not in done:
                    future.cancel()
            if stop.is_set():
                return
            for future in done:
                child = waits.get(future)
                if child is None or child.process is None:
                    continue
                code = child.process.returncode
                multiprocess.mark_process_dead(child.process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                if time.monotonic() - child.started < STARTUP_S:
                    msg = (
                        f"the {child.role} process stopped while starting (exit code {code}); "
                        "its log lines above say why"
                    )
                    raise SupervisorError(msg)
                logger.error(
                    "child stopped unexpectedly; restarting it",
                    extra={"role": child.role, "pid": child.process.pid, "exit_code": code},
                )
                _count_restart(child)
                await asyncio.sleep(RESTART_DELAY_S)
                if not stop.is_set():
                    await _start(child, env)
    finally:
        stopping.cancel()


def _count_restart(child: Child) -> None:
    now = time.monotonic()
    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
    if len(child.restarts) > MAX_RESTARTS_PER_MINUTE:
        msg = (
            f"the {child.role} process died {len(child.restarts)} times in a minute; see its "
            "log lines above"
        )
        raise SupervisorError(msg)


async def _stop_all(children: list[Child]) -> None:
    running = [c.process for c in children if c.process and c.process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile: nothing to stop
            process.send_signal(signal.SIGTERM)
    waits = [asyncio.ensure_future(p.wait()) for p in running]
    if not waits:
        return
    _done, late = await asyncio.wait(waits, timeout=STOP_WAIT_S)
    if late:
        logger.warning("children did not stop in time; killing them")
        for process in running:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.wait(waits, timeout=2)
