"""Per-epoch checkpoints of a training run, so a restarted worker loses at most one epoch.

Layout under a job's artifact directory (``settings.data_dir/jobs/<id>/checkpoint/``)::

    epoch-00003/model.safetensors   the model's state (tied weights stored once)
    epoch-00003/state.safetensors   optimizer tensors and RNG states; JSON metadata: optimizer
                                    param groups and scalars, epoch, step, history, elapsed time
    LATEST                          the name of the newest complete epoch directory

A checkpoint is written to a temporary directory, renamed into place, then ``LATEST`` is
replaced atomically: a worker killed at any moment leaves the previous checkpoint intact (and the
next attempt removes what it left); one that fails to write removes its temporary files itself.
Only safetensors and JSON are read back (never pickle).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

LATEST = "LATEST"


@dataclass
class Checkpoint:
    epoch: int
    step: int
    history: list[dict[str, Any]]
    elapsed_s: float  # training time spent by earlier attempts
    path: Path


def save(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    *,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    elapsed_s: float,
) -> None:
    """Write the state after ``epoch`` and make it the one ``load`` finds.

    A checkpoint that cannot be written (a full or read-only disk) raises ``OSError`` saying so,
    and leaves the previous one as it was and nothing of its own behind.
    """
    name = f"epoch-{epoch:05d}"
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(directory)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"))
        tensors, metadata = _optimizer_state(optimizer)
        tensors.update({f"rng.{key}": value.contiguous() for key, value in rng.items()})
        metadata.update(
            epoch=str(epoch), step=str(step), history=json.dumps(history), elapsed_s=repr(float(elapsed_s))
        )
        save_file(tensors, str(tmp / "state.safetensors"), metadata=metadata)
        for file in tmp.iterdir():
            _fsync(file)
        final = directory / name
        shutil.rmtree(final, ignore_errors=True)  # a leftover of an attempt killed after this rename
        os.rename(tmp, final)
        _point_to(directory, name)
    except (OSError, SafetensorError) as e:  # safetensors says ENOSPC in its own words
        if _latest(directory) != name:  # renamed into place but not pointed to: nobody reads it
            shutil.rmtree(directory / name, ignore_errors=True)
        raise OSError(f"could not write the checkpoint of epoch {epoch} to {directory}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed; else what was written of it
    for old in directory.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _point_to(directory: Path, name: str) -> None:
    """Replace ``LATEST`` with ``name``, atomically (no temporary file is left if it fails)."""
    pointer = directory / f".{LATEST}.tmp-{os.getpid()}"
    try:
        pointer.write_text(name)
        _fsync(pointer)
        os.replace(pointer, directory / LATEST)
    finally:
        pointer.unlink(missing_ok=True)
    _fsync(directory)


def _latest(directory: Path) -> str | None:
    """The name ``LATEST`` holds, or None when there is none yet."""
    try:
        return (directory / LATEST).read_text().strip()
    except FileNotFoundError:
        return None


def _remove_leftovers(directory: Path) -> None:
    """Temporary files of earlier attempts (a worker killed mid-write has another pid than this one)."""
    for leftover in directory.glob(".*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def load(directory: Path) -> Checkpoint | None:
    """The newest complete checkpoint, or None (no checkpoint yet)."""
    name = _latest(directory)
    if name is None:
        return None
    path = directory / name
    with safe_open(str(path / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
    return Checkpoint(
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        history=json.loads(meta["history"]),
        elapsed_s=float(meta["elapsed_s"]),
        path=path,
    )


def restore(
    checkpoint: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, torch.Tensor]:
    """Load the model and optimizer state in place; the RNG states, by name."""
    load_model(
        model, str(checkpoint.path / "model.safetensors"), device=str(device)
    )  # strict; tied weights once
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(checkpoint.path / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            tensors[key] = f.get_tensor(key)
    state: dict[int, dict[str, Any]] = {}
    for key, value in json.loads(meta["optimizer_scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            index, name = key.removeprefix("optimizer.").split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return {key.removeprefix("rng."): value for key, value in tensors.items() if key.startswith("rng.")}


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The optimizer's state as flat tensors plus JSON metadata (its param groups and scalars)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    metadata = {
        "param_groups": json.dumps(state_dict["param_groups"]),
        "optimizer_scalars": json.dumps(scalars),
    }
    return tensors, metadata


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
