"""NPZ files: a zip of ``.npy`` arrays, read as ``numpy.load(allow_pickle=False)`` reads them
(numpy's own header reader, its ``max_header_size``, no object arrays), but chunk by chunk."""

from __future__ import annotations

import inspect
import zipfile
from typing import IO, NamedTuple

import numpy as np
from numpy.lib import format as npy

from app.datasets.description import ArrayInfo, Description, Limits
from app.datasets.errors import in_array
from app.datasets.stats import ArrayStats, NotFinite, common_samples, numeric_dtype
from app.datasets.zips import Inflation, open_member

NPY_MAX_HEADER_SIZE: int = inspect.signature(np.load).parameters["max_header_size"].default
CHUNK_BYTES = 8 << 20
_MAGIC = b"\x93NUMPY"


class NpyHeader(NamedTuple):
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype


def is_npz(archive: zipfile.ZipFile) -> bool:
    files = [info.filename for info in archive.infolist() if not info.is_dir()]
    return bool(files) and all(name.endswith(".npy") for name in files)


def describe_npz(archive: zipfile.ZipFile, limits: Limits) -> Description:
    inflation = Inflation(limits.max_bytes)
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist() if not info.is_dir()}
    headers = {}
    for name, info in members.items():  # every header first: a bad one fails before any data is read
        with open_member(archive, info) as stream:
            headers[name] = read_header(stream, name)
    samples = common_samples({name: header.shape for name, header in headers.items()}, limits.max_samples)
    arrays = [
        _describe_member(archive, members[name], name, header, inflation) for name, header in headers.items()
    ]
    return Description(format="npz", samples=samples, arrays=arrays)


def read_header(stream: IO[bytes], name: str) -> NpyHeader:
    """The ``.npy`` header of ``stream`` (left at the array's data); a 422 for a header past
    numpy's ``max_header_size``, an object (pickled) dtype or anything but numbers."""
    try:
        head = stream.peek(12)[:12]  # type: ignore[attr-defined]  # ZipExtFile reads ahead for peek
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise in_array(name, f"zip member {name!r}.npy cannot be inflated: {e}") from e
    if len(head) < 10 or not head.startswith(_MAGIC) or head[6] not in (1, 2):
        raise in_array(name, f"member {name!r}.npy is not a .npy array of format 1.0 or 2.0")
    length = int.from_bytes(head[8:10] if head[6] == 1 else head[8:12], "little")
    if length > NPY_MAX_HEADER_SIZE:
        msg = (
            f"array {name!r}: its .npy header is {length} bytes, past numpy.load's max_header_size "
            f"({NPY_MAX_HEADER_SIZE}): refused, as numpy refuses to parse it"
        )
        raise in_array(name, msg, limit=NPY_MAX_HEADER_SIZE, got=length)
    try:
        version = npy.read_magic(stream)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = reader(stream, max_header_size=NPY_MAX_HEADER_SIZE)
    except ValueError as e:
        raise in_array(name, f"array {name!r} has an unreadable .npy header: {e}") from e
    numeric_dtype(name, dtype)
    return NpyHeader(tuple(shape), fortran_order, dtype)


def _describe_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, header: NpyHeader, inflation: Inflation
) -> ArrayInfo:
    stats = ArrayStats(name, header.shape, header.dtype)
    itemsize = header.dtype.itemsize
    left = int(np.prod(header.shape)) * itemsize
    with open_member(archive, info) as stream:
        read_header(stream, name)
        while left:
            data = inflation.read(stream, min(left, CHUNK_BYTES // itemsize * itemsize), name)
            if not data or len(data) % itemsize:
                expected = int(np.prod(header.shape)) * itemsize
                raise in_array(name, f"array {name!r} is cut short: its data ends before {expected} bytes")
            left -= len(data)
            try:
                stats.add(np.frombuffer(data, dtype=header.dtype))
            except NotFinite as e:
                order = "F" if header.fortran_order else "C"
                at = [int(i) for i in np.unravel_index(e.index, header.shape, order=order)]
                raise in_array(name, f"array {name!r} holds NaN or infinity at {at}", index=at) from None
        inflation.read_all(stream, name)  # to its end, where zipfile checks the CRC
    return stats.info()
