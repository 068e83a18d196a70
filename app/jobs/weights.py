"""A finished job's trained weights: one safetensors file per job, never pickle.

The worker writes ``<artifact_dir>/model.safetensors`` (keys: the service module's state_dict
keys, tied weights stored once by ``safetensors.torch.save_model``) and then a small
``model.json`` sidecar with its size and sha256, each atomically (a temporary file in the same
directory, then ``os.replace``): a reader sees the whole file or none. The sidecar is what the
API reads to say a job has weights, so no store column is needed. Metadata: the inferred
spec's canonical JSON, the torch version and the job id.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from app.core.config import settings
from layers import ModelSpec

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"
CHUNK = 1 << 20


def canonical_json(spec: ModelSpec) -> str:
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(model: torch.nn.Module, spec: ModelSpec, job_id: str, directory: Path) -> dict[str, Any]:
    """Write the model's weights (moved to the CPU) and the sidecar; the sidecar's content."""
    model.to("cpu")
    metadata = {
        "format": "pt",
        "spec": canonical_json(spec),
        "torch_version": torch.__version__,
        "job_id": job_id,
    }
    weights = directory / WEIGHTS_FILE
    _atomic_write(weights, lambda tmp: save_model(model, tmp, metadata=metadata))
    info = {"file": WEIGHTS_FILE, "size_bytes": weights.stat().st_size, "sha256": sha256_of(weights)}
    _atomic_write(directory / SIDECAR_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info)))
    return info


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


def load_weights(path: Path) -> tuple[ModelSpec, torch.nn.Module]:
    """The model a weights file was saved from, built on the CPU from its spec, weights loaded strictly."""
    spec = ModelSpec.model_validate_json(read_metadata(path)["spec"])
    model = spec.build()
    load_model(model, path, strict=True)
    return spec, model.eval()  # safe: nn.Module.eval(), inference mode for dropout and batch norm


def job_dir(job_id: str) -> Path:
    """A job's artifact directory, absolute (a Ray worker does not share the API's working directory)."""
    return (settings.data_dir / "jobs" / job_id).resolve()
