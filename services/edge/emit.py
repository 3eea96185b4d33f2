"""One event to one socket, without a task and without a turn of the event loop.

`socketio.AsyncServer.emit` creates a task per recipient and then waits for them, so every
call gives the event loop a full turn. The events reader sends a `display` per projected
trigger: through `emit` it handled one event per loop turn, and under load a turn is long
(every socket's frames, every Redis reply), so the reader fell behind while the process
still had CPU to spare (measured at 1,500 triggers/s: 512-event reads took ~160 ms, events
reached screens ~0.5 s late). Here the packet goes straight into engine.io's per-socket
send queue, which is unbounded: nothing waits.

This uses python-socketio's own packet class and ack-id registry (`manager._generate_ack_id`,
`server._send_packet`), the same calls `emit` makes; tests/services/edge pin the behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import socketio
from socketio import packet

NAMESPACE = "/"


async def emit_to(
    sio: socketio.AsyncServer,
    sid: str,
    event: str,
    data: Any,
    *,
    callback: Callable[..., Any] | None = None,
) -> bool:
    """Queue `event` for socket `sid`; False when that socket is gone."""
    manager = sio.manager
    eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
    if eio_sid is None:
        return False
    ack_id = manager._generate_ack_id(sid, callback) if callback is not None else None
    pkt = sio.packet_class(packet.EVENT, namespace=NAMESPACE, data=[event, data], id=ack_id)
    await sio._send_packet(eio_sid, pkt)
    return True
