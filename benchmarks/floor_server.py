"""The floor: a bare python-socketio server that acks every `trigger` at once, nothing else.

No auth, no Redis, no validation: what any python-socketio edge on uvicorn costs per ack on
this machine. `python -m benchmarks.floor_server --port P`.
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn


def create_app() -> socketio.ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", logger=False)

    @sio.on("trigger")  # type: ignore[untyped-decorator]  # python-socketio has no types
    async def trigger(_sid: str, data: Any) -> dict[str, Any]:
        trigger_id = data.get("id") if isinstance(data, dict) else None
        return {"id": trigger_id, "success": True, "data": {"echo": True}}

    return socketio.ASGIApp(sio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
