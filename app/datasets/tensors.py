"""safetensors files: the header is validated by the safetensors library itself (offsets, sizes,
dtypes), then each tensor's bytes are read from the file in chunks (not mapped: a mapped file's
pages count in the server's memory as they are touched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from app.datasets.description import ArrayInfo, Description, Limits
from app.datasets.errors import DatasetError, in_array
from app.datasets.stats import ArrayStats, NotFinite, common_samples

MAX_HEADER_BYTES = 1 << 20  # a dataset's header: a few arrays (a checkpoint's thousands fit too)
CHUNK_BYTES = 8 << 20
DTYPES = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # read as its bits, widened to float32 below
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, then the header's ``{``."""
    return len(head) > 8 and 2 <= int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{"


def describe_safetensors(path: Path, limits: Limits) -> Description:
    header, start = _header(path)
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    for name, entry in tensors.items():
        if entry["dtype"] not in DTYPES:
            raise in_array(name, f"tensor {name!r} has dtype {entry['dtype']}: not one numpy reads")
    samples = common_samples({name: tuple(e["shape"]) for name, e in tensors.items()}, limits.max_samples)
    with open(path, "rb") as f:
        arrays = [_describe_tensor(f, name, entry, start) for name, entry in tensors.items()]
    return Description(format="safetensors", samples=samples, arrays=arrays)


def _header(path: Path) -> tuple[dict, int]:
    """The validated header, and where the tensors' data starts."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_HEADER_BYTES:
            msg = f"the safetensors header is {length} bytes; the limit is {MAX_HEADER_BYTES}"
            raise DatasetError(msg, ctx={"limit": MAX_HEADER_BYTES, "got": length})
        raw = f.read(length)
    try:
        with safe_open(path, framework="numpy"):
            pass
        header = json.loads(raw)
    except (SafetensorError, ValueError, OSError) as e:
        raise DatasetError(f"not a valid safetensors file: {e}") from e
    return header, 8 + length


def _describe_tensor(f, name: str, entry: dict, start: int) -> ArrayInfo:
    dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
    begin, end = entry["data_offsets"]
    stats = ArrayStats(name, shape, np.dtype("float32") if entry["dtype"] == "BF16" else dtype)
    f.seek(start + begin)
    left = end - begin
    while left:
        data = f.read(min(left, CHUNK_BYTES // dtype.itemsize * dtype.itemsize))
        if not data:  # the file shrank since safetensors checked it
            raise in_array(name, f"tensor {name!r} is cut short")
        left -= len(data)
        values = np.frombuffer(data, dtype=dtype)
        if entry["dtype"] == "BF16":  # bfloat16 is float32's upper half
            values = (values.astype("<u4") << 16).view("<f4")
        try:
            stats.add(values)
        except NotFinite as e:
            at = [int(i) for i in np.unravel_index(e.index, shape)]
            raise in_array(name, f"tensor {name!r} holds NaN or infinity at {at}", index=at) from None
    return stats.info(dtype="bfloat16" if entry["dtype"] == "BF16" else None)
