"""A finished job's trained weights: one safetensors file per job, never pickle.

The worker serializes them (``serialize_weights``: keys are the service module's state_dict
keys, tied weights stored once by ``safetensors.torch.save_model``; metadata: the inferred spec's
canonical JSON, the torch version and the job id) and sends the bytes back through Ray
(``app.jobs.collect``). The API writes them to ``MB_DATA_DIR/jobs/<id>/model.safetensors``
(``write_weights``) and then a small ``model.json`` sidecar with their size and sha256, each
atomically (a temporary file in the same directory, then ``os.replace``): a reader sees the
whole file or none. The sidecar is what the API reads to say a job has weights, so no store
column is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from layers import AnyModel, GraphSpec, ModelSpec

MODEL: TypeAdapter[ModelSpec | GraphSpec] = TypeAdapter(AnyModel)
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


def canonical_json(spec: ModelSpec | GraphSpec) -> str:
    """The spec as compact JSON with sorted keys: the same model, the same text."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then rename it over ``path``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def serialize_weights(
    model: torch.nn.Module, spec: ModelSpec | GraphSpec, job_id: str, extra: dict[str, str] | None = None
) -> bytes:
    """The model's weights (moved to the CPU) as a safetensors file's bytes (``extra``: more
    metadata, such as the standardized inputs' statistics)."""
    model.to("cpu")
    metadata = {
        **(extra or {}),
        "format": "pt",
        "spec": canonical_json(spec),
        "torch_version": torch.__version__,
        "job_id": job_id,
    }
    with tempfile.TemporaryDirectory(prefix="mb-weights-") as tmp:  # save_model writes only to a path
        path = Path(tmp) / WEIGHTS_FILE
        save_model(model, str(path), metadata=metadata)
        return path.read_bytes()


def write_weights(directory: Path, chunks: Iterable[bytes], size_bytes: int, sha256: str) -> dict[str, Any]:
    """Write a weights file from its chunks, then the sidecar; the sidecar's content.

    ``ValueError`` when the bytes are not the ``size_bytes`` and ``sha256`` announced (nothing is
    left behind); the file is replaced only once it is whole and checked.
    """

    def write(tmp: str) -> None:
        digest, written = hashlib.sha256(), 0
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                del chunk  # before the next one arrives: one chunk in memory at a time
        if (written, digest.hexdigest()) != (size_bytes, sha256):
            raise ValueError(
                f"the weights arrived damaged: {written} bytes with sha256 {digest.hexdigest()}, "
                f"announced {size_bytes} bytes with sha256 {sha256}"
            )

    _atomic_write(directory / WEIGHTS_FILE, write)
    info = {"file": WEIGHTS_FILE, "size_bytes": size_bytes, "sha256": sha256}
    _atomic_write(directory / SIDECAR_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info)))
    return info


def remove_weights(directory: Path) -> None:
    """Delete a job's weights (the sidecar first, so no reader is told of a missing file)."""
    for name in (SIDECAR_FILE, WEIGHTS_FILE):
        (directory / name).unlink(missing_ok=True)


def weights_info(directory: Path) -> dict[str, Any] | None:
    """The sidecar of a job's weights, or None when they were never (completely) written."""
    try:
        info = json.loads((directory / SIDECAR_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not (directory / WEIGHTS_FILE).is_file():
        return None
    return info


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


def trained_module(path: Path) -> torch.nn.Module:
    """The trained module of a weights file (a job's export loads it in its trace worker)."""
    return load_weights(path)[1]


def stored_spec(path: Path) -> ModelSpec | GraphSpec:
    """The inferred spec a weights file was saved from: a sequence model or a graph."""
    return MODEL.validate_json(read_metadata(path)["spec"])


def load_weights(path: Path) -> tuple[ModelSpec | GraphSpec, torch.nn.Module]:
    """The model a weights file was saved from, built on the CPU from its spec, weights loaded strictly."""
    spec = stored_spec(path)
    model = spec.build()
    load_model(model, path, strict=True)
    return spec, model.eval()  # safe: nn.Module.eval(), inference mode for dropout and batch norm
