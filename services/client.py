"""A Python client for remote-display: asyncio `Controller` and `Screen` over Socket.IO.

- `Controller.trigger()` is at-least-once: it re-sends the same trigger id when an ack does not
  come in time or says PENDING (the server answers a repeat with the original result), and it
  takes a `trigger:result` for that id as the answer.
- Tokens come from a provider (a string, or a function returning one, sync or async); on
  `auth:expiring` the client fetches a new access token and sends `auth:refresh`.
- `Screen` acks every `display` and reconnects with `lastEventId`, so a screen that was offline
  is sent the current display and one that was not is not sent it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from schemas import wire_json
from schemas.errors import RemoteDisplayError
from streams.ids import is_newer

logger = logging.getLogger(__name__)

TokenProvider = str | Callable[[], str | Awaitable[str]]
DisplayHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


async def _token(provider: TokenProvider) -> str:
    if isinstance(provider, str):
        return provider
    value = provider()
    return await value if inspect.isawaitable(value) else value


class _Packet(socketio.packet.Packet):  # type: ignore[misc]  # python-socketio is untyped
    json = wire_json


class TriggerFailedError(RemoteDisplayError, TimeoutError):
    """The trigger got no final answer within its deadline (it may still be processed)."""


@dataclass
class _Client:
    url: str
    token: TokenProvider
    transports: list[str] = field(default_factory=lambda: ["websocket"])
    headers: dict[str, str] = field(default_factory=dict)
    sio: socketio.AsyncClient = field(init=False)
    refreshes: int = 0

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.2,
            logger=False,
            serializer=_Packet,
            json=wire_json,  # set on _Packet: the library's own class stays as it is
        )
        self.sio.on("auth:expiring", self._on_expiring)

    async def _auth(self) -> dict[str, Any]:
        return {"token": await _token(self.token)}

    async def connect(self, wait_s: float = 10) -> None:
        await self.sio.connect(
            self.url,
            auth=self._auth,
            transports=self.transports,
            headers=self.headers,
            wait_timeout=wait_s,
        )

    async def close(self) -> None:
        await self.sio.disconnect()

    async def _on_expiring(self, _data: Any = None) -> None:
        try:
            fresh = await _token(self.token)
            reply = await self.sio.call("auth:refresh", {"accessToken": fresh}, timeout=10)
        except Exception as exc:  # the server ends the connection at exp; we reconnect then
            logger.warning("token refresh failed", extra={"error": repr(exc)})
            return
        if isinstance(reply, dict) and reply.get("success"):
            self.refreshes += 1
        else:
            logger.warning("token refresh refused", extra={"reply": reply})


@dataclass
class Controller(_Client):
    """Sends triggers; one instance per controller identity (token)."""

    ack_timeout: float = 5.0
    _results: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sio.on("trigger:result", self._on_result)

    async def _on_result(self, ack: Any) -> None:
        if isinstance(ack, dict):
            future = self._results.get(str(ack.get("id")))
            if future is not None and not future.done():
                future.set_result(ack)

    async def send(self, payload: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """One send of a trigger payload; the raw ack."""
        ack: dict[str, Any] = await self.sio.call("trigger", payload, timeout=wait_s)
        return ack

    async def trigger(
        self,
        order_id: str,
        *,
        display_index: int = 0,
        trigger_id: str | None = None,
        deadline: float = 60.0,
        retry_every: float | None = None,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        """Trigger an order until a final answer (success or a final error code) comes."""
        trigger_id = trigger_id or str(uuid.uuid4())
        payload: dict[str, Any] = {
            "id": trigger_id,
            "orderId": order_id,
            "displayIndex": display_index,
            "timestamp": int(time.time() * 1000),
        }
        if traceparent:
            payload["traceparent"] = traceparent
        loop = asyncio.get_running_loop()
        result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._results[trigger_id] = result
        wait = retry_every or self.ack_timeout
        end = loop.time() + deadline
        try:
            while loop.time() < end:
                payload["timestamp"] = int(time.time() * 1000)  # a retry is a fresh request
                try:
                    ack = await self.send(payload, wait_s=min(wait, end - loop.time()))
                except (TimeoutError, socketio.exceptions.TimeoutError):
                    pass
                except (socketio.exceptions.BadNamespaceError, socketio.exceptions.SocketIOError):
                    # Not connected (the edge went away): the client reconnects by itself;
                    # re-send the same id once it is back.
                    await asyncio.sleep(min(0.2, max(end - loop.time(), 0)))
                    continue
                else:
                    if ack.get("code") not in ("PENDING", "RATE_LIMITED", "INTERNAL_ERROR"):
                        return ack
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(
                        asyncio.shield(result), max(min(wait, end - loop.time()), 0)
                    )
            msg = f"trigger {trigger_id} got no final answer within {deadline} s"
            raise TriggerFailedError(msg)
        finally:
            self._results.pop(trigger_id, None)

    async def status(self, trigger_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self.sio.call("trigger:status", {"id": trigger_id})
        return reply


@dataclass
class Screen(_Client):
    """Shows displays: acks each, remembers the last event id for recovery on reconnect."""

    on_display: DisplayHandler | None = None
    last_event_id: str | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sio.on("display", self._on_display)

    async def _auth(self) -> dict[str, Any]:
        auth = await super()._auth()
        if self.last_event_id is not None:
            auth["lastEventId"] = self.last_event_id
        return auth

    async def _on_display(self, display: Any) -> dict[str, Any]:
        if not isinstance(display, dict):
            return {"status": "failed", "error": "display is not an object"}
        reply: dict[str, Any] = {"status": "shown"}
        if self.on_display is not None:
            try:
                reply = (await self.on_display(display)) or reply
            except Exception as exc:
                reply = {"status": "failed", "error": repr(exc)[:500]}
        self.displays.append(display)
        event_id = str(display.get("eventId"))
        if self.last_event_id is None or _newer(event_id, self.last_event_id):
            self.last_event_id = event_id
        self.changed.set()
        return reply

    @property
    def current(self) -> dict[str, Any] | None:
        """The newest display shown (by event id)."""
        best = None
        for display in self.displays:
            if best is None or _newer(str(display["eventId"]), str(best["eventId"])):
                best = display
        return best


def _newer(a: str, b: str) -> bool:
    """`is_newer`, with an id that is not a stream id sorting before every other."""
    try:
        return is_newer(a, b)
    except ValueError:
        try:
            is_newer(a, a)
        except ValueError:
            return False  # `a` is not an id
        return True  # `b` is not
