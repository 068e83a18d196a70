"""A download of a file opened before its response starts, so deleting the file cannot cut it short."""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from fastapi.responses import FileResponse
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

RANGE_ERRORS = (400, 416)  # what FileResponse answers, in plain text, to a Range it cannot serve


class OpenFileResponse(FileResponse):
    """Starlette's ``FileResponse`` (``Content-Length``, HEAD, ranges) of an open file, closed when
    the response ends.

    ``FileResponse`` opens its path only after sending the headers: a file deleted meanwhile (a
    job's DELETE) was a 500, or headers promising N bytes and none arriving. This one serves the
    path of the open descriptor, ``/dev/fd/N``: opening it opens the file the descriptor holds,
    which outlives its name. A ``Range`` header it cannot serve is a 400 or 416 in the API's
    error format, at ``["header", "range"]``.
    """

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        descriptor = file.fileno()
        super().__init__(f"/dev/fd/{descriptor}", stat_result=os.fstat(descriptor), **kwargs)
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without the pathsend extension: the server would open the path after this call returned.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        refused: Message | None = None

        async def sending(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] in RANGE_ERRORS:
                refused = message  # sent with its body, once that is rewritten
            elif refused is not None and message["type"] == "http.response.body":
                await _send_range_error(send, refused, message["body"].decode())
            else:
                await send(message)

        try:
            await super().__call__({**scope, "extensions": extensions}, receive, sending)
        finally:
            self.file.close()


async def _send_range_error(send: Send, start: Message, text: str) -> None:
    msg = text or "the requested range is not within the file"
    detail = {"type": "range_not_satisfiable" if start["status"] == 416 else "range_invalid"}
    body = json.dumps({"detail": [{**detail, "loc": ["header", "range"], "msg": msg}]}).encode()
    headers = MutableHeaders(raw=list(start["headers"]))
    headers["content-type"] = "application/json"
    headers["content-length"] = str(len(body))
    await send({**start, "headers": headers.raw})
    await send({"type": "http.response.body", "body": body})
