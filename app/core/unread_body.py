"""Answers sent before the request's body was read say ``Connection: close``.

A 413 (body too large), an upload refused mid-stream, an error before the route read its body:
the rest of the body is still on the connection, so the server closes it (uvicorn's h11) or
reads and discards it all first (httptools). Either way the client must not send its next request
on it: the answer says so, and the server then closes the connection at once.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CloseUnreadBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        read = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers

        async def reading() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                read = True
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and not read:
                answer = Headers(raw=message["headers"])
                if answer.get("connection", "").lower() != "close":
                    message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, reading, sending)
