"""A download of a file opened before its response starts, so deleting the file cannot cut it short."""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send


class OpenFileResponse(FileResponse):
    """Starlette's ``FileResponse`` (``Content-Length``, HEAD, ranges) of an open file, closed when
    the response ends.

    ``FileResponse`` opens its path only after sending the headers: a file deleted meanwhile (a
    job's DELETE) was a 500, or headers promising N bytes and none arriving. This one serves the
    path of the open descriptor, ``/dev/fd/N``: opening it opens the file the descriptor holds,
    which outlives its name.
    """

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        descriptor = file.fileno()
        super().__init__(f"/dev/fd/{descriptor}", stat_result=os.fstat(descriptor), **kwargs)
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without the pathsend extension: the server would open the path after this call returned.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self.file.close()
