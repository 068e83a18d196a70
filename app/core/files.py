"""A download of a file opened before its response starts, so deleting the file cannot cut it short."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send


class OpenFileResponse(FileResponse):
    """Starlette's ``FileResponse`` (``Content-Length``, HEAD, ranges) of an open file, closed when
    the response ends.

    ``FileResponse`` opens its path only after sending the headers: a file deleted meanwhile (a
    job's DELETE) was a 500, or headers promising N bytes and none arriving. An open file outlives
    its name, so this one reads from the file it was given.
    """

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        super().__init__(file.name, stat_result=os.fstat(file.fileno()), **kwargs)
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without the pathsend extension, which would have the server open the path itself.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self.file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        # Where FileResponse opens its path, for every kind of answer (whole, one range, several).
        yield anyio.wrap_file(self.file)
