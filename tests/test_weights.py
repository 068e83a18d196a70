"""The weights a worker serializes and the API writes: safetensors with the module's state_dict
keys, tied weights stored once, written atomically with its sidecar only when the bytes are those
announced, and loaded back strictly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn

from app.jobs.weights import (
    SIDECAR_FILE,
    WEIGHTS_FILE,
    load_weights,
    remove_weights,
    serialize_weights,
    weights_info,
    write_weights,
)
from layers import ModelSpec
from layers.analysis.trace import trace_model

SPEC = {
    "layers": [
        {"type": "Linear", "out_features": 4},
        {"type": "BatchNorm1d"},
        {"type": "Linear", "out_features": 4},
    ]
}


def trained(seed: int = 0) -> tuple[ModelSpec, nn.Module]:
    spec = trace_model(ModelSpec.model_validate(SPEC), (2, 4)).spec
    torch.manual_seed(seed)
    return spec, spec.build()


def save_weights(model: nn.Module, spec: ModelSpec, job_id: str, directory: Path) -> dict:
    """What a job does: the worker serializes, the API writes (in two chunks, as through Ray)."""
    data = serialize_weights(model, spec, job_id)
    half = len(data) // 2
    return write_weights(directory, [data[:half], data[half:]], len(data), hashlib.sha256(data).hexdigest())


def test_the_file_round_trips_strictly_with_its_sidecar(tmp_path: Path) -> None:
    spec, model = trained()
    info = save_weights(model, spec, "job1", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SIDECAR_FILE, WEIGHTS_FILE]  # no temporary left
    content = (tmp_path / WEIGHTS_FILE).read_bytes()
    assert info == {
        "file": WEIGHTS_FILE,
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert weights_info(tmp_path) == info == json.loads((tmp_path / SIDECAR_FILE).read_text())
    with safe_open(tmp_path / WEIGHTS_FILE, framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())  # buffers too (running stats)
    loaded_spec, loaded = load_weights(tmp_path / WEIGHTS_FILE)
    assert loaded_spec == spec and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_no_sidecar_means_no_weights(tmp_path: Path) -> None:
    assert weights_info(tmp_path) is None
    spec, model = trained()
    save_weights(model, spec, "job1", tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    assert weights_info(tmp_path) is None
    remove_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "altered", "longer"])
def test_bytes_that_are_not_those_announced_leave_nothing_behind(tmp_path: Path, damage: str) -> None:
    spec, model = trained()
    data = serialize_weights(model, spec, "job1")
    sent = {
        "truncated": data[:-1],
        "altered": data[:-1] + bytes([data[-1] ^ 1]),
        "longer": data + b" ",
    }[damage]
    with pytest.raises(ValueError, match="the weights arrived damaged"):
        write_weights(tmp_path, [sent], len(data), hashlib.sha256(data).hexdigest())
    assert list(tmp_path.iterdir()) == []  # neither the file, nor a temporary, nor a sidecar


def test_tied_weights_are_stored_once_and_load_strictly(tmp_path: Path) -> None:
    spec, model = trained()
    model[2].weight = model[0].weight  # tied, as an embedding and its output projection are
    save_weights(model, spec, "job1", tmp_path)
    with safe_open(tmp_path / WEIGHTS_FILE, framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert len(keys) == len(model.state_dict()) - 1
    [(dropped, kept)] = [(k, v) for k, v in metadata.items() if k in model.state_dict()]
    assert {dropped, kept} == {"0.weight", "2.weight"}
    _, fresh = trained(seed=1)
    fresh[2].weight = fresh[0].weight
    load_model(fresh, tmp_path / WEIGHTS_FILE, strict=True)
    assert fresh[2].weight is fresh[0].weight
    torch.testing.assert_close(fresh[0].weight, model[0].weight)
