"""Edge test helpers: a real uvicorn server on a free port, real Socket.IO clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import socketio
import uvicorn

from observability.metrics import Metrics
from observability.tracing import Telemetry
from services.config.settings import Settings
from services.edge.app import Edge, create_app
from tests.helpers import free_port

ACCESS_SECRET = "test-access-secret-0123456789abcdef0123456789"
REFRESH_SECRET = "test-refresh-secret-0123456789abcdef012345678"


def mint(
    user: str = "user-1",
    screen: str = "screen-1",
    role: str = "controller",
    *,
    ttl: int = 900,
    secret: str = ACCESS_SECRET,
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "userId": user,
        "screenId": screen,
        "role": role,
        "typ": "access",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + ttl,
    }
    claims.update(extra)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, "HS256")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class RunningEdge:
    url: str
    edge: Edge
    server: _Server
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_edge(
    settings: Settings, *, telemetry: Telemetry | None = None, metrics: Metrics | None = None
) -> AsyncIterator[RunningEdge]:
    port = free_port()
    app = create_app(settings, telemetry=telemetry, metrics=metrics)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws_max_size=65536
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield RunningEdge(f"http://127.0.0.1:{port}", app.edge, server, task)  # type: ignore[attr-defined]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Client:
    """A python-socketio client that records what the server sends it."""

    sio: socketio.AsyncClient
    received: dict[str, list[Any]] = field(default_factory=dict)
    display_reply: dict[str, Any] | None = field(default_factory=lambda: {"status": "shown"})

    async def emit(self, event: str, data: Any, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received.get(event, [])) < count:
            if time.monotonic() > deadline:
                msg = f"{event} x{count} not received in {timeout} s: {self.received}"
                raise AssertionError(msg)
            await asyncio.sleep(0.01)
        return self.received[event]


async def connect(
    url: str, token: str | None, *, last_event_id: str | None = None, **kwargs: Any
) -> Client:
    sio = socketio.AsyncClient(reconnection=False)
    client = Client(sio)

    def record(event: str) -> Any:
        async def handler(*args: Any) -> Any:
            client.received.setdefault(event, []).append(args[0] if args else None)
            if event == "display":
                return client.display_reply
            return None

        return handler

    for event in ("display", "trigger:result", "auth:expiring", "auth:expired", "connect_error"):
        sio.on(event, record(event))
    auth: dict[str, Any] = {}
    if token is not None:
        auth["token"] = token
    if last_event_id is not None:
        auth["lastEventId"] = last_event_id
    await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=5, **kwargs)
    return client


async def refused(url: str, token: str | None, **kwargs: Any) -> str:
    """Connect expecting a refusal; returns the connect_error message."""
    sio = socketio.AsyncClient(reconnection=False)
    messages: list[Any] = []

    @sio.on("connect_error")
    async def on_error(data: Any) -> None:
        messages.append(data)

    with contextlib.suppress(socketio.exceptions.ConnectionError):
        await sio.connect(
            url,
            auth={"token": token} if token else {},
            transports=["websocket"],
            wait_timeout=5,
            **kwargs,
        )
    await sio.disconnect()
    assert messages, "the connection was not refused"
    data = messages[0]
    return str(data.get("message") if isinstance(data, dict) else data)


def trigger_payload(order_id: str = "A-1", **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "orderId": order_id,
        "displayIndex": 0,
        "timestamp": int(time.time() * 1000),
    }
    payload.update(extra)
    return payload
