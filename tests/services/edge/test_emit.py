"""`emit_to`: one event to one socket, acked, without giving the event loop a turn."""

from __future__ import annotations

import asyncio
from typing import Any

from services.edge.emit import emit_to
from tests.edge_helpers import RunningEdge, connect, mint


async def test_emit_to_sends_without_a_loop_turn_and_gets_the_ack(edge: RunningEdge) -> None:
    screen = await connect(edge.url, mint("screen-user", "emit-screen", "screen"))
    try:
        [sid] = [sid for sid, conn in edge.edge.connections.items() if conn.claims.role == "screen"]
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        turned: list[bool] = []
        asyncio.get_running_loop().call_soon(turned.append, True)

        sent = await emit_to(
            edge.edge.sio, sid, "display", {"eventId": "1-0"}, callback=acked.set_result
        )

        # The events reader sends one display per event: a loop turn per send made it fall
        # behind under load (services/edge/emit.py).
        assert sent is True
        assert turned == []
        assert await asyncio.wait_for(acked, 5) == {"status": "shown"}
        assert screen.received["display"] == [{"eventId": "1-0"}]
    finally:
        await screen.sio.disconnect()


async def test_emit_to_a_gone_socket_sends_nothing(edge: RunningEdge) -> None:
    assert await emit_to(edge.edge.sio, "no-such-sid", "display", {"eventId": "1-0"}) is False
