"""Dataset files made in the tests from scikit-learn's digits and wine, in every upload format,
with the arrays they hold (to compare a description with numpy's own figures); uploading one,
and the files a data directory holds."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import save
from sklearn.datasets import load_digits, load_wine

URL = "/v1/datasets"


def upload(client: TestClient, data: bytes, name: str = "data.bin", query: str = "", **headers: str):
    """POST ``data`` as the upload's ``file``, named ``name``."""
    return client.post(URL + query, files={"file": (name, data)}, headers=headers)


def stored_files(data_dir: Path) -> list[str]:
    """The dataset files on disk under ``data_dir`` (and any part file left behind)."""
    root = data_dir / "datasets"
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    )


Arrays = dict[str, np.ndarray]


def digits() -> Arrays:
    data = load_digits()
    return {"x": data.images.astype(np.float32), "y": data.target.astype(np.int64)}


def wine_columns() -> Arrays:
    data = load_wine()
    columns = {name: data.data[:, i] for i, name in enumerate(data.feature_names)}
    return {**columns, "target": data.target.astype(np.int64)}


def npz(arrays: Arrays, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def safetensors(arrays: Arrays) -> bytes:
    return save(arrays)


def csv(columns: Arrays) -> bytes:
    names = list(columns)
    rows = zip(*(columns[name].tolist() for name in names), strict=True)
    return "\n".join([",".join(names), *(",".join(map(repr, row)) for row in rows)]).encode() + b"\n"


def parquet(columns: Arrays) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def png(pixels: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format)
    return buffer.getvalue()


def image_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def digit_images(count: int = 200) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """``count`` digits as 8x8 grayscale PNGs in a folder per class (``digit_<n>/``); the members,
    their pixels (uint8, in member order) and labels."""
    data = digits()
    pixels = (data["x"][:count] * 255 / 16).round().astype(np.uint8)
    labels = data["y"][:count]
    members = {
        f"digit_{label}/{i:04}.png": png(image)
        for i, (image, label) in enumerate(zip(pixels, labels, strict=True))
    }
    return members, pixels, labels


FORMATS: dict[str, Callable[[], tuple[bytes, Arrays]]] = {
    "npz": lambda: (npz(digits()), digits()),
    "npz_compressed": lambda: (npz(digits(), compressed=True), digits()),
    "safetensors": lambda: (safetensors(digits()), digits()),
    "csv": lambda: (csv(wine_columns()), wine_columns()),
    "parquet": lambda: (parquet(wine_columns()), wine_columns()),
}
