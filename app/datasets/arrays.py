"""The arrays of a stored dataset, read whole for training or prediction: only those a job names,
each by the reader of its format. The file was checked when it was uploaded (its description is
stored), so these readers trust its structure but still never unpickle (``allow_pickle=False``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as csv
import pyarrow.parquet as pq
import torch
from safetensors import safe_open

from app.datasets.description import Description, Limits
from app.datasets.images import decode, scan
from app.datasets.tables import _first_row, _is_number
from app.datasets.zips import MEMBER_SLACK, Inflation, open_zip


def read_arrays(path: Path, description: Description, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the dataset file at ``path``, described by ``description``."""
    wanted = sorted(set(names))
    if description.format == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in wanted}
    if description.format == "safetensors":
        with safe_open(path, framework="pt") as f:  # torch reads bfloat16, numpy does not
            return {name: _numpy(f.get_tensor(name)) for name in wanted}
    if description.format == "parquet":
        table = pq.read_table(path, columns=wanted)
        return {name: table.column(name).to_numpy() for name in wanted}
    if description.format == "csv":
        return _read_csv(path, description, wanted)
    return _read_images(path, description)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def _read_csv(path: Path, description: Description, wanted: list[str]) -> dict[str, np.ndarray]:
    names = _first_row(path)
    header = not all(_is_number(name) for name in names)
    if not header:
        names = [f"f{i}" for i in range(len(names))]
    read = csv.ReadOptions(column_names=names, skip_rows=int(header))
    convert = csv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()), include_columns=wanted)
    table = csv.read_csv(path, read, convert_options=convert)
    dtypes = {array.name: array.dtype for array in description.arrays}
    return {name: table.column(name).to_numpy().astype(dtypes[name]) for name in wanted}


def _read_images(path: Path, description: Description) -> dict[str, np.ndarray]:
    """The ``image`` array ``[N, C, H, W]`` as float32 in [0, 1] and the ``label`` array."""
    limits = Limits(max_bytes=1 << 62, max_samples=description.samples)  # checked at upload
    resize = tuple(description.images.resize) if description.images and description.images.resize else None
    with open_zip(path, description.samples + MEMBER_SLACK) as archive:
        folder = scan(archive, limits, resize)  # type: ignore[arg-type]
        info = description.images
        shape = (description.samples, info.channels if info else 1, *reversed(folder.size))
        images = np.empty(shape, dtype=np.float32)
        labels = np.empty(description.samples, dtype=np.int64)
        for i, (label, pixels) in enumerate(decode(archive, folder, Inflation(limits.max_bytes))):
            images[i] = pixels / np.float32(255)
            labels[i] = label
    return {"image": images, "label": labels}
