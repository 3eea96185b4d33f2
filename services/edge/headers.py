"""Headers every HTTP response of the edge carries, whatever route (or none) answered it.

`X-Content-Type-Options: nosniff` (SPEC 10): a browser never runs a response as a type it
guessed, including the 404s and 405s that no route of ours wrote. Routes that need more
(the pages' Content-Security-Policy, the documents' sandbox) set it themselves; what a
route set is never overwritten.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASELINE = ((b"x-content-type-options", b"nosniff"),)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _value in headers}
                headers += [(name, value) for name, value in BASELINE if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)
