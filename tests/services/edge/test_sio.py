"""`services/edge/sio.py`: what the edge takes from python-socketio's and engine.io's insides.

One canary per internal: each fails with a message naming the internal and what in the edge
relies on it, so a library upgrade that changes one stops here, not in production. The
behaviour behind them is tested too (below, and in test_hostile.py).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import engineio
import pytest
import socketio
from engineio.async_socket import AsyncSocket

from services.edge.sio import EdgeServer
from tests.edge_helpers import RunningEdge, connect, mint

WHY = "services/edge/sio.py relies on it; check the library's change and adapt that module"


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_handle_event_is_overridable() -> None:
    assert _parameters(socketio.AsyncServer._handle_event) == [
        "self",
        "eio_sid",
        "namespace",
        "id",
        "data",
    ], f"AsyncServer._handle_event(eio_sid, namespace, id, data) changed: {WHY}"


def test_handle_eio_message_is_overridable() -> None:
    assert _parameters(socketio.AsyncServer._handle_eio_message) == ["self", "eio_sid", "data"], (
        f"AsyncServer._handle_eio_message(eio_sid, data) changed: {WHY}"
    )


def test_half_built_binary_packets_are_kept_per_session() -> None:
    server = EdgeServer(max_packet_bytes=1024)
    assert isinstance(getattr(server, "_binary_packet", None), dict), (
        f"AsyncServer._binary_packet (eio_sid → half-built packet) is gone: {WHY}"
    )


def test_engine_io_sockets_queue_and_close() -> None:
    server = EdgeServer(max_packet_bytes=1024)
    assert isinstance(server.eio.sockets, dict), f"AsyncServer.eio.sockets is gone: {WHY}"
    assert hasattr(server.eio.reason, "SERVER_DISCONNECT"), (
        f"engine.io's reason.SERVER_DISCONNECT is gone: {WHY}"
    )
    close = _parameters(AsyncSocket.close)
    assert {"wait", "reason"} <= set(close), (
        f"engineio AsyncSocket.close(wait=, reason=) changed ({close}): {WHY}"
    )
    assert "self.queue" in inspect.getsource(engineio.base_socket.BaseSocket.__init__), (
        f"engine.io sockets no longer have a send `queue`: {WHY}"
    )


def test_ack_ids_packets_and_send_packet() -> None:
    server = EdgeServer(max_packet_bytes=1024)
    assert _parameters(server.manager._generate_ack_id) == ["sid", "callback"], (
        f"manager._generate_ack_id(sid, callback) changed: {WHY}"
    )
    assert _parameters(server._send_packet) == ["eio_sid", "pkt"], (
        f"AsyncServer._send_packet(eio_sid, pkt) changed: {WHY}"
    )
    assert server.packet_class is not None, f"AsyncServer.packet_class is gone: {WHY}"
    assert _parameters(server.manager.eio_sid_from_sid) == ["sid", "namespace"], (
        f"manager.eio_sid_from_sid(sid, namespace) changed: {WHY}"
    )


def test_packets_can_leave_out_binary_support() -> None:
    from socketio import packet

    assert packet.Packet.uses_binary_events is True, (
        f"socketio.packet.Packet.uses_binary_events (the switch sio.py's _Packet turns off) "
        f"changed: {WHY}"
    )
    server = EdgeServer(max_packet_bytes=1024)
    made = server.packet_class(packet.EVENT, data=["display", {"eventId": "1-0"}])
    assert made.packet_type == packet.EVENT
    assert made.encode() == '2["display",{"eventId":"1-0"}]'


def test_rooms_and_participants() -> None:
    server = EdgeServer(max_packet_bytes=1024)
    assert isinstance(server.manager.rooms, dict), f"manager.rooms is gone: {WHY}"
    assert _parameters(server.manager.get_participants) == ["namespace", "room"], (
        f"manager.get_participants(namespace, room) changed: {WHY}"
    )


@pytest.mark.parametrize(
    ("distribution", "floor", "ceiling"),
    [("python-socketio", (5, 18), (5, 19)), ("python-engineio", (4, 15), (4, 16))],
)
def test_the_installed_libraries_are_in_the_tested_range(
    distribution: str, floor: tuple[int, int], ceiling: tuple[int, int]
) -> None:
    from importlib.metadata import version

    installed = tuple(int(part) for part in version(distribution).split(".")[:2])
    assert floor <= installed < ceiling, (
        f"{distribution} {version(distribution)} is outside the range services/edge/sio.py "
        f"was tested with ({floor} to below {ceiling}); pyproject.toml pins it"
    )


# -- the behaviour behind them, on a live edge ----------------------------------------------


async def test_emit_to_sends_without_a_loop_turn_and_gets_the_ack(edge: RunningEdge) -> None:
    screen = await connect(edge.url, mint("screen-user", "emit-screen", "screen"))
    try:
        [sid] = [sid for sid, conn in edge.edge.connections.items() if conn.claims.role == "screen"]
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        turned: list[bool] = []
        asyncio.get_running_loop().call_soon(turned.append, True)

        sent = await edge.edge.sio.emit_to(
            sid, "display", {"eventId": "1-0"}, callback=acked.set_result
        )

        # The events reader sends one display per event: a loop turn per send made it fall
        # behind under load (services/edge/sio.py).
        assert sent is True
        assert turned == []
        assert await asyncio.wait_for(acked, 5) == {"status": "shown"}
        assert screen.received["display"] == [{"eventId": "1-0"}]
        assert list(edge.edge.sio.in_room("screen:emit-screen")) == [sid]
        assert edge.edge.sio.room_is_empty("screen:emit-screen") is False
        assert edge.edge.sio.room_is_empty("screen:nobody") is True
    finally:
        await screen.sio.disconnect()


async def test_emit_to_a_gone_socket_sends_nothing(edge: RunningEdge) -> None:
    assert await edge.edge.sio.emit_to("no-such-sid", "display", {"eventId": "1-0"}) is False
