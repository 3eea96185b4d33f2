"""Request bodies of the edge's JSON endpoints, read no further than their bound."""

from __future__ import annotations

from starlette.requests import Request


async def read_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None when it is over `max_bytes` (declared or sent). A client that hangs
    up mid-body raises starlette's ClientDisconnect."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
