"""The format of an upload, from its content (magic bytes), never from its name; and its
description by the reader of that format."""

from __future__ import annotations

import codecs
from pathlib import Path

from app.datasets.description import Description, Limits
from app.datasets.errors import DatasetError
from app.datasets.images import Size, describe_images
from app.datasets.npz import describe_npz, is_npz
from app.datasets.tables import describe_csv, describe_parquet
from app.datasets.tensors import describe_safetensors, looks_like_safetensors
from app.datasets.zips import MEMBER_SLACK, open_zip

HEAD_BYTES = 64 << 10
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive's end record
FORMATS = "NPZ, safetensors, CSV, Parquet, or a zip of PNG/JPEG images in one folder per class"
RESIZE = ("query", "resize")


def describe(path: Path, limits: Limits, resize: Size | None = None) -> Description:
    """What the file at ``path`` holds; a ``DatasetError`` (422, 413 or 415) when it cannot be used."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        raise DatasetError("the file is empty")
    if head.startswith(ZIP_MAGIC):
        with open_zip(path, limits.max_samples + MEMBER_SLACK) as archive:
            if is_npz(archive):
                _no_resize(resize, "an NPZ file")
                return describe_npz(archive, limits)
            return describe_images(archive, limits, resize)
    if head.startswith(b"PAR1"):
        _no_resize(resize, "a Parquet file")
        return describe_parquet(path, limits)
    if looks_like_safetensors(head, size):
        _no_resize(resize, "a safetensors file")
        return describe_safetensors(path, limits)
    if head.startswith(b"\x93NUMPY"):
        raise _unsupported("a single .npy array: save it in an NPZ file (numpy.savez) to name it")
    if _is_text(head):
        _no_resize(resize, "a CSV file")
        return describe_csv(path, limits)
    raise _unsupported("not a format it recognises")


def _is_text(head: bytes) -> bool:
    """UTF-8 without NUL bytes (a multi-byte character may be cut at the end of ``head``)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _unsupported(what: str) -> DatasetError:
    msg = f"the file is {what}; uploads are {FORMATS}"
    return DatasetError(msg, kind="unsupported_format", status=415, ctx={"formats": FORMATS})


def _no_resize(resize: Size | None, what: str) -> None:
    if resize is not None:
        raise DatasetError(f"resize applies to a zip of images; the file is {what}", loc=RESIZE)
