"""Every use of python-socketio's and engine.io's internals, in one place, each with its reason.

The edge needs four things the libraries' public API does not give:

1. Client events named like reserved ones (`connect`, `disconnect`) must not reach the
   handlers with forged arguments: `AsyncServer._handle_event` is overridden to drop them.
2. Binary packets (not part of our protocol) and packets the library cannot parse must close
   only that connection: `AsyncServer._handle_eio_message` is overridden, and a half-built
   binary packet is dropped from `AsyncServer._binary_packet`.
3. A hostile client's transport must close now, not at the ping timeout (45 s): the engine.io
   socket is taken from `eio.sockets` and closed with `socket.close(wait=False, ...)` plus
   `None` in `socket.queue` (engine.io's own signal for its writer to close).
4. One event to one socket without a task and a loop turn per recipient (`AsyncServer.emit`
   makes a task per recipient and waits for them: at 1,500 triggers/s the events reader fell
   ~0.5 s behind): `manager._generate_ack_id`, `packet_class`, `AsyncServer._send_packet`,
   the same calls `emit` makes. Rooms are read from `manager.rooms` and
   `manager.get_participants`.

pyproject.toml pins python-socketio and python-engineio to the range these were tested with;
tests/services/edge/test_sio.py has one canary per internal that fails with a clear message
when an upgrade changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import socketio
from socketio import packet

from observability.logging import library_logger
from schemas import wire_json

logger = logging.getLogger(__name__)

NAMESPACE = "/"
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "message"})


class _ClientFaults(logging.Filter):
    """engine.io logs a bad request (an old protocol version, an unknown session id, a bad
    transport) as an ERROR without a traceback. It is the client's fault, not the server's:
    a WARNING, so that alerts on errors mean something. Its real errors carry a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and not record.exc_info:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _client_faults_as_warnings(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, _ClientFaults) for f in logger.filters):
        logger.addFilter(_ClientFaults())
    return logger


class _Packet(packet.Packet):  # type: ignore[misc]  # python-socketio is untyped
    """Socket.IO packets without binary support (our protocol has none; binary packets are
    refused): python-socketio scans every packet's data for bytes otherwise, ~3 % of the
    edge's CPU. `uses_binary_events` is the switch the library's msgpack serializer uses."""

    uses_binary_events = False
    json = wire_json


class EdgeServer(socketio.AsyncServer):  # type: ignore[misc]  # python-socketio is untyped
    """python-socketio's ASGI server with the edge's four needs (module docstring)."""

    def __init__(self, *, max_packet_bytes: int) -> None:
        super().__init__(
            async_mode="asgi",
            serializer=_Packet,
            json=wire_json,
            cors_allowed_origins="*",  # the Origin is checked at connect, with a clear refusal
            max_http_buffer_size=max_packet_bytes,
            # Loggers of our own: given False, both libraries add a plain-text stderr handler.
            logger=library_logger("socketio.server"),
            engineio_logger=_client_faults_as_warnings(library_logger("engineio.server")),
        )

    # 1. reserved event names ----------------------------------------------------------------

    async def _handle_event(self, eio_sid: str, namespace: str, id: Any, data: Any) -> None:
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            return
        if data[0] in RESERVED_EVENTS:
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    # 2. binary and malformed packets --------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Refuse what our protocol never uses and what the library cannot parse.

        Binary packets (types 5 and 6, and their attachments) are not part of the protocol;
        the library keeps a half-assembled one per connection forever when its attachments
        are malformed. A malformed packet otherwise becomes an ERROR with a traceback.
        Either way only that connection is closed, with one structured warning.
        """
        binary = isinstance(data, bytes) or (isinstance(data, str) and data[:1] in ("5", "6"))
        if not binary:
            try:
                await super()._handle_eio_message(eio_sid, data)
                return
            except Exception as exc:  # the library's parse errors have no common type
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            problem = "binary packets are not part of the protocol"
        self._binary_packet.pop(eio_sid, None)
        logger.warning(
            "malformed socket.io packet; closing the connection", extra={"error": problem}
        )
        await self.close_transport(eio_sid)

    # 3. closing a transport now -------------------------------------------------------------

    async def close_transport(self, eio_sid: str) -> None:
        """Disconnect a client and close its transport now.

        engine.io's disconnect only queues a CLOSE packet and trusts the client to hang up;
        a hostile one would keep the WebSocket open until the ping timeout (45 s).
        """
        socket_ = self.eio.sockets.pop(eio_sid, None)
        if socket_ is None:
            return
        # wait=False: waiting for the send queue to drain would hang a long-polling client's
        # request until its next GET, which a closed session never gets.
        await socket_.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)
        socket_.queue.put_nowait(None)

    # 4. one event to one socket, and rooms ------------------------------------------------

    async def emit_to(
        self,
        sid: str,
        event: str,
        data: Any,
        *,
        callback: Callable[..., Any] | None = None,
    ) -> bool:
        """Queue `event` for socket `sid` without a task or a loop turn; False when it is gone.

        engine.io's per-socket send queue is unbounded: nothing waits.
        """
        manager = self.manager
        eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is None:
            return False
        ack_id = manager._generate_ack_id(sid, callback) if callback is not None else None
        pkt = self.packet_class(packet.EVENT, namespace=NAMESPACE, data=[event, data], id=ack_id)
        await self._send_packet(eio_sid, pkt)
        return True

    def in_room(self, room: str) -> Iterator[str]:
        """The sids of the sockets in `room` on this edge."""
        for sid, _eio_sid in self.manager.get_participants(NAMESPACE, room):
            yield sid

    def room_is_empty(self, room: str) -> bool:
        """Without iterating: the manager's own room map (the hot path asks per event)."""
        return not self.manager.rooms.get(NAMESPACE, {}).get(room)
