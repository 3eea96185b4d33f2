"""An ASGI guard in front of engine.io for input its own code does not survive cleanly.

- WebSocket frames that are not engine.io packets (empty, or not starting with a packet type
  0-6) make engine.io's handler raise outside its error handling: the socket dropped without
  a close frame and its session left behind until the ping timeout. The guard closes such a
  connection itself (1002, protocol error) and tells engine.io the client left.
- Long-polling POST bodies are read here first, bounded: over the limit is 413 (engine.io's own
  path for that hangs the request); bodies that are not engine.io payloads are 400.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

_PACKET_TYPES = frozenset("0123456")
_POLLING_TYPES = _PACKET_TYPES | {"b"}  # `b`: a base64 binary packet in a polling payload


class EngineIOGuard:
    def __init__(self, app: ASGIApp, *, path: str = "/socket.io", max_bytes: int) -> None:
        self._app = app
        self._path = path
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not str(scope.get("path", "")).startswith(self._path):
            await self._app(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._app(scope, self._websocket_receive(receive, send), send)
        elif scope["type"] == "http" and scope.get("method") == "POST":
            await self._polling_post(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    def _websocket_receive(self, receive: Receive, send: Send) -> Receive:
        async def guarded() -> Message:
            message = await receive()
            if message["type"] != "websocket.receive" or message.get("text") is None:
                return message
            text: str = message["text"]
            if text and text[0] in _PACKET_TYPES:
                return message
            logger.warning("websocket frame is not an engine.io packet; closing the connection")
            await send({"type": "websocket.close", "code": 1002})
            return {"type": "websocket.disconnect", "code": 1002}

        return guarded

    async def _polling_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_bytes):
            await _reply(send, 413, b"payload too large")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self._max_bytes:
                await _reply(send, 413, b"payload too large")
                return
            if not message.get("more_body"):
                break
        if not _is_polling_payload(body):
            logger.warning("polling body is not an engine.io payload; refused")
            await _reply(send, 400, b"bad request")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


def _is_polling_payload(body: bytes) -> bool:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(part and part[0] in _POLLING_TYPES for part in text.split("\x1e"))


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
