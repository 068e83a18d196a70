"""An upload received: ``multipart/form-data`` (``curl -F file=@data.npz``, Swagger UI) streamed
from the request into a part file, counted and hashed as it arrives, never held whole in memory.

Only the part named ``file`` is taken; it stops at its byte limit (a 413) the moment the limit
is passed, and is complete only when the closing boundary arrives (a cut-off upload is a 422).
On any failure, the client going away included, the part file is removed."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.datasets import errors
from app.datasets.errors import FILE, DatasetError
from app.datasets.files import DatasetFiles

FIELD = "file"
FORM_SLACK = 64 << 10  # the multipart framing around the file: boundaries and part headers
FLUSH_BYTES = 1 << 20  # written (in a worker thread) once this much has arrived
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Upload:
    """A complete, synced part file (still open, so still locked against the sweep): its size,
    its content's sha256 and the client's file name."""

    path: Path
    handle: BinaryIO
    size: int
    sha256: str
    filename: str

    def release(self) -> None:
        """Close the part file and remove it, unless it was committed (renamed) meanwhile."""
        self.handle.close()
        self.path.unlink(missing_ok=True)


class _FilePart:
    """The ``file`` part's bytes, on their way to disk."""

    def __init__(self, handle: BinaryIO, limit: int, too_large: DatasetError) -> None:
        self.handle, self.limit, self.too_large = handle, limit, too_large
        self.pending: list[bytes] = []
        self.pending_bytes = self.size = 0
        self.hash = hashlib.sha256()

    def data(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise self.too_large
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)

    def flush(self) -> None:
        try:
            for chunk in self.pending:
                self.hash.update(chunk)
                self.handle.write(chunk)
            self.pending, self.pending_bytes = [], 0
        except OSError as e:
            raise _disk_error(e, self.size) from e

    def finish(self) -> None:
        self.flush()
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as e:
            raise _disk_error(e, self.size) from e


class _Form:
    """The multipart parser's callbacks: headers of each part, the ``file`` part's data."""

    def __init__(self, file: _FilePart) -> None:
        self.file = file
        self.filename: str | None = None
        self.in_file = self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.file.data(data[start:end])

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.ended = True

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("latin-1")
        if name != FIELD:
            msg = f"unexpected form field {name!r}"
            msg += ": the upload takes one field, 'file' (options go in the query)"
            raise DatasetError(msg, kind="extra_forbidden", loc=("body", name))
        if self.filename is not None:
            raise DatasetError("more than one part named 'file': upload one file at a time")
        self.filename = _display_name(options.get(b"filename", b""))
        self.in_file = True


async def receive(request: Request, files: DatasetFiles, limit: int) -> Upload:
    """Stream the request's ``file`` into a part file of ``files``; a 413 past ``limit`` bytes
    (``MB_MAX_DATASET_BYTES``)."""
    boundary = _boundary(request)
    too_large = errors.too_large("the file", "MB_MAX_DATASET_BYTES", limit)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_SLACK:
        raise too_large  # without reading a byte of it
    path, handle = files.new_part()
    try:
        form = _Form(_FilePart(handle, limit, too_large))
        await _parse(request, boundary, form, limit + FORM_SLACK, too_large)
        await run_in_threadpool(form.file.finish)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    return Upload(path, handle, form.file.size, form.file.hash.hexdigest(), form.filename or "")


async def _parse(request: Request, boundary: bytes, form: _Form, most: int, too_large: DatasetError) -> None:
    try:
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > most:  # framing past the slack: a part other than 'file' never ends
                raise too_large
            parser.write(chunk)
            if form.file.pending_bytes >= FLUSH_BYTES:
                await run_in_threadpool(form.file.flush)
        parser.finalize()
    except FormParserError as e:
        raise DatasetError(
            f"not valid multipart/form-data: {e}", kind="multipart_invalid", loc=("body",)
        ) from e
    if not form.ended:
        msg = "the upload ended before its closing boundary: it was cut off"
        raise DatasetError(msg, kind="upload_incomplete", loc=("body",))
    if form.filename is None:
        raise DatasetError("Field required", kind="missing", loc=FILE)


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        msg = "send the file as multipart/form-data, in the field 'file' (curl -F file=@data.npz)"
        raise DatasetError(msg, kind="unsupported_media_type", status=415, loc=("header", "content-type"))
    return options[b"boundary"]


def _display_name(raw: bytes) -> str:
    """The client's file name, for display only (nothing is ever stored under it)."""
    name = raw.decode("utf-8", errors="replace").replace("\\", "/").rsplit("/", 1)[-1]
    return _CONTROL.sub("", name)[:255]


def _disk_error(error: OSError, written: int) -> Exception:
    if error.errno not in DISK_FULL:
        return error
    msg = f"the server's disk filled up after {written} bytes of the upload; nothing was kept"
    return DatasetError(msg, kind="insufficient_storage", status=413, ctx={"written": written})
