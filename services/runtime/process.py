"""Running the services in one process until a stop signal: edge, worker, or both."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence

import uvicorn

from observability.metrics import Metrics
from observability.otlp_metrics import start_otlp_metrics
from observability.tracing import Telemetry, configure_telemetry
from schemas.errors import RemoteDisplayError
from services.config.settings import Settings
from services.config.store import detect_store
from services.runtime import heap

logger = logging.getLogger(__name__)

SETTLE_WAIT_S = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event decides."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_services(
    settings: Settings,
    *,
    stop: asyncio.Event,
    edge: bool = True,
    worker: bool = True,
    partitions: Sequence[int] | None = None,
) -> None:
    """Run the edge and/or a worker until `stop` is set, then shut both down."""
    service = "rdisplay" if edge and worker else ("rdisplay-edge" if edge else "rdisplay-worker")
    telemetry = configure_telemetry(settings.telemetry, default_service=service)
    # One registry per process; under `serve`, every process also writes to metrics_dir and
    # the edge's /metrics adds them up.
    metrics = Metrics(multiprocess_dir=settings.telemetry.metrics_dir)
    meters = start_otlp_metrics(settings.telemetry, metrics, default_service=service)
    try:
        settings = await detect_store(settings)
        await _run(
            settings,
            stop=stop,
            edge=edge,
            worker=worker,
            partitions=partitions,
            telemetry=telemetry,
            metrics=metrics,
        )
    finally:
        telemetry.shutdown()  # flushes buffered spans
        if meters is not None:
            meters.shutdown()  # and a last metrics export


async def _run(
    settings: Settings,
    *,
    stop: asyncio.Event,
    edge: bool,
    worker: bool,
    partitions: Sequence[int] | None,
    telemetry: Telemetry,
    metrics: Metrics,
) -> None:
    tasks: list[asyncio.Task[None]] = []
    server: _Server | None = None
    if edge:
        from services.edge.app import create_app

        config = uvicorn.Config(
            create_app(settings, telemetry=telemetry, metrics=metrics),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws_max_size=64 * 1024,
            # Our frames are a few hundred bytes of JSON: compressing each cost ~3 % of the
            # edge's CPU (issue 13's profile) and saved next to nothing on the wire.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(_serve_edge(server, settings), name="edge"))
    if worker:
        from services.worker.app import run_worker

        tasks.append(
            asyncio.create_task(
                run_worker(
                    settings,
                    stop=stop,
                    partitions=partitions,
                    tracer=telemetry.tracer,
                    metrics=metrics,
                ),
                name="worker",
            )
        )
    settling = asyncio.create_task(_settle_when_started(server, settings), name="heap")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    settling.cancel()
    stop.set()
    if server is not None:
        server.should_exit = True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    if server is not None and not server.started and stopper not in done:
        raise EdgeStartError(_cannot_listen(settings))


async def _settle_when_started(server: _Server | None, settings: Settings) -> None:
    """Once the edge listens (or at once, for a worker alone): say where to go, `heap.settle()`."""
    for _ in range(int(SETTLE_WAIT_S / 0.05)):
        if server is None or server.started:
            break
        await asyncio.sleep(0.05)
    if server is not None and server.started:
        logger.info(
            "open %s in a browser: the start page, the screen and controller pages%s",
            start_url(settings),
            " and a one-click demo" if settings.app_env == "development" else "",
            extra={"url": start_url(settings)},
        )
    heap.settle()


def start_url(settings: Settings) -> str:
    """The start page's address as a browser on this machine reaches it."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


class EdgeStartError(RemoteDisplayError):
    """The edge did not start serving (its port taken, its address not this host's)."""


def _cannot_listen(settings: Settings) -> str:
    return (
        f"the edge could not listen on {settings.host}:{settings.port} (an earlier line says "
        "why; SOCKET_IO_HOST and SOCKET_IO_PORT choose the address)"
    )


async def _serve_edge(server: _Server, settings: Settings) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot bind; a SystemExit inside a task would
        # escape the event loop past every cleanup (and the embedded Valkey's stop).
        raise EdgeStartError(_cannot_listen(settings)) from None
