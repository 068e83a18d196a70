"""A job's data from an uploaded dataset: ``{"id": ..., "inputs": "x", "targets": "y"}``.

``inputs`` maps each model input to an array (a string: the sequence model's one input), and
``targets`` each model output to its targets' array (a string: the one output). A list of names
stacks 1-D arrays (a CSV's or Parquet file's columns) as the features of one ``[N, F]`` input.

The plan (``app.jobs.plan``) checks the names against the stored description and the model, and
stores what it checked in ``planned``, so the job's request says what it trained on even once the
dataset is deleted. The worker reads the file from the shared data directory (the README's
deployment contract): once per job, never once per epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from app.datasets.arrays import read_arrays
from app.datasets.description import ArrayInfo, Description
from layers.language.errors import ShapeError, SpecError
from layers.language.io import SEQUENCE_INPUT, SEQUENCE_OUTPUT
from layers.training.datasets import DatasetInfo, DatasetKind, DatasetLimits, Named
from layers.training.losses import Targets

ArrayName = Annotated[str, Field(min_length=1, max_length=1024)]
ArrayRef = ArrayName | Annotated[list[ArrayName], Field(min_length=1, max_length=4096)]
Mapping = ArrayRef | Annotated[dict[ArrayName, ArrayRef], Field(min_length=1, max_length=64)]
STD_FLOOR = 1e-8  # a constant feature is centred, not divided by zero
INTEGER_KINDS = "iub"


class UploadedDataset(DatasetKind):
    """A dataset uploaded with POST /v1/datasets, by its id: which arrays feed the model's inputs
    and which hold each output's targets."""

    name: Literal["uploaded"] = "uploaded"
    id: str = Field(pattern="^[0-9a-f]{64}$", description="the dataset's id (its sha256)")
    inputs: Mapping = Field(
        description='the array of the model\'s input ("x"), a list of 1-D arrays (columns) stacked as '
        "its features, or {input_name: array} for a graph model"
    )
    targets: Mapping = Field(description='the targets\' array ("y"), or {output_name: array}')
    standardize: bool = Field(
        False, description="scale each input feature by the mean and std of the training split"
    )
    dtype: Literal["float32", "int64"] | None = Field(
        None,
        description='the inputs\' dtype; null: "int64" (token ids) when the arrays hold integers and '
        'the model starts with an Embedding, else "float32"',
    )
    planned: Description | None = Field(
        None,
        description="set by the server when it queues the job: the arrays it checked (ignored in a request)",
    )

    def input_arrays(self) -> dict[str, ArrayRef]:
        return self.inputs if isinstance(self.inputs, dict) else {SEQUENCE_INPUT: self.inputs}

    def target_arrays(self) -> dict[str, ArrayRef]:
        return self.targets if isinstance(self.targets, dict) else {SEQUENCE_OUTPUT: self.targets}

    def plan(
        self,
        description: Description,
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
        embedding: bool,
        with_targets: bool = True,
    ) -> UploadedDataset:
        """This dataset checked against its stored ``description`` and a model taking ``inputs``
        and giving ``outputs`` (``embedding``: it starts with an Embedding); ``planned`` set.
        ``SpecError`` at the field naming the array otherwise."""
        arrays = {array.name: array for array in description.arrays}
        used: dict[str, ArrayInfo] = {}
        fields = [("inputs", self.input_arrays(), inputs)]
        if with_targets:
            fields.append(("targets", self.target_arrays(), outputs))
        for field, given, names in fields:
            _same_names(field, given, names, "input" if field == "inputs" else "output")
            for key, ref in given.items():
                loc = _loc(self, field, key)
                for name in _names(ref):
                    used[name] = _known(arrays, name, loc)
                if isinstance(ref, list):
                    _columns(ref, arrays, loc)
        integers = all(_integral(used[n]) for r in self.input_arrays().values() for n in _names(r))
        dtype = self.dtype or ("int64" if integers and embedding else "float32")
        if dtype == "int64":
            for key, ref in self.input_arrays().items():
                for name in _names(ref):
                    info = used[name]
                    if not _integral(info):
                        raise SpecError(
                            _loc(self, "inputs", key),
                            f"array {name!r} holds {info.dtype} values: token ids must be integers",
                        )
                    if info.min < 0:
                        raise SpecError(
                            _loc(self, "inputs", key),
                            f"array {name!r} holds negative token ids (down to {info.min:g})",
                        )
        kept = [info for info in description.arrays if info.name in used]
        planned = description.model_copy(update={"arrays": kept})
        return self.model_copy(update={"planned": planned, "dtype": dtype})

    def _planned(self) -> Description:
        if self.planned is None:
            raise RuntimeError("an uploaded dataset is described once the plan has checked it")
        return self.planned

    def info_of(self, ref: ArrayRef) -> tuple[tuple[int, ...], ArrayInfo]:
        """The per-sample shape ``ref`` gives, and the first array's description."""
        arrays = {array.name: array for array in self._planned().arrays}
        names = _names(ref)
        if isinstance(ref, list):
            return (len(names),), arrays[names[0]]
        return tuple(arrays[names[0]].shape[1:]), arrays[names[0]]

    def describe(self, classification: bool, limits: DatasetLimits) -> DatasetInfo:
        """The sequence model's input and output: the one mapped input and target."""
        described = self._planned()
        (x_ref,), (y_ref,) = self.input_arrays().values(), self.target_arrays().values()
        shape, _ = self.info_of(x_ref)
        y_shape, _ = self.info_of(y_ref)
        y_arrays = [a for a in described.arrays if a.name in _names(y_ref)]
        if classification:
            classes = int(max(a.max for a in y_arrays)) + 1
            targets = Targets(num_classes=max(2, classes), shape=())
        else:
            targets = Targets(num_classes=None, shape=y_shape)
        tokens = None
        if self.dtype == "int64":
            x_arrays = [a for a in described.arrays if a.name in _names(x_ref)]
            tokens = int(max(a.max for a in x_arrays)) + 1
        numel = described.samples * math.prod(shape)
        if numel > limits.max_dataset_numel:
            raise SpecError(
                ("dataset", "inputs"),
                f"the inputs hold {numel} numbers; the limit is {limits.max_dataset_numel}",
                {"limit": limits.max_dataset_numel, "got": numel},
            )
        return DatasetInfo(described.samples, shape, self.dtype or "float32", targets, tokens)  # type: ignore[arg-type]

    def check_targets(self, classification: bool) -> None:
        """Class indices for a classification loss: whole numbers from 0, one per sample."""
        if not classification:
            return
        for key, ref in self.target_arrays().items():
            shape, info = self.info_of(ref)
            loc = _loc(self, "targets", key)
            if isinstance(ref, list) or shape != ():
                msg = f"a classification loss needs one class index per sample; array {info.name!r}"
                raise ShapeError(loc, f"{msg} has shape {info.shape}", {"got": info.shape})
            if not _integral(info) or info.min < 0:
                raise SpecError(
                    loc,
                    f"array {info.name!r} holds {info.dtype} values from {info.min:g} to {info.max:g}: a "
                    "classification loss needs class indices (whole numbers from 0)",
                )

    def read(self, path: Path, with_targets: bool = True) -> tuple[Named, Named]:
        """The inputs and targets as tensors, read from the dataset file at ``path``."""
        described = self._planned()
        inputs, targets = self.input_arrays(), self.target_arrays() if with_targets else {}
        names = [n for ref in (*inputs.values(), *targets.values()) for n in _names(ref)]
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {self.id} is no longer stored (deleted while the job was queued?)"
            )
        arrays = read_arrays(path, described, names)
        x = {
            key: _tensor(arrays, ref, torch.int64 if self.dtype == "int64" else torch.float32)
            for key, ref in inputs.items()
        }
        y = {key: _tensor(arrays, ref, None) for key, ref in targets.items()}
        return x, y


def standardize(
    train: Named, val: Named
) -> tuple[Named, Named, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Each float input scaled per feature by the training split's mean and std; the statistics."""
    stats = {}
    for name, x in train.items():
        if x.is_floating_point():
            mean, std = x.mean(dim=0), x.std(dim=0, correction=0).clamp_min(STD_FLOOR)
            stats[name] = (mean, std)
    scaled = [
        {n: (x - stats[n][0]) / stats[n][1] if n in stats else x for n, x in part.items()}
        for part in (train, val)
    ]
    return scaled[0], scaled[1], stats


def _names(ref: ArrayRef) -> list[str]:
    return list(ref) if isinstance(ref, list) else [ref]


def _loc(dataset: UploadedDataset, field: str, key: str) -> tuple[str, ...]:
    return ("dataset", field, key) if isinstance(getattr(dataset, field), dict) else ("dataset", field)


def _integral(info: ArrayInfo) -> bool:
    """Integers (or booleans), or floats that are whole numbers labelling classes."""
    return info.dtype.startswith(("int", "uint", "bool")) or info.classes is not None


def _same_names(field: str, given: dict, names: tuple[str, ...], what: str) -> None:
    if set(given) != set(names):
        extra = sorted(set(given) - set(names))
        loc = ("dataset", field, extra[0]) if extra else ("dataset", field)
        raise SpecError(
            loc,
            f"{field} must map the model's {what}s {list(names)} to arrays; got {sorted(given)}",
            {"expected": list(names), "got": sorted(given)},
        )


def _known(arrays: dict[str, ArrayInfo], name: str, loc: tuple) -> ArrayInfo:
    if name not in arrays:
        raise SpecError(
            loc,
            f"the dataset has no array {name!r}; it has {sorted(arrays)[:20]}",
            {"array": name, "arrays": sorted(arrays)[:100]},
        )
    return arrays[name]


def _columns(ref: list[str], arrays: dict[str, ArrayInfo], loc: tuple) -> None:
    for name in ref:
        if len(arrays[name].shape) != 1:
            msg = f"a list stacks 1-D arrays (columns) as features; array {name!r} has shape"
            raise ShapeError(loc, f"{msg} {arrays[name].shape}", {"got": arrays[name].shape})


def _tensor(arrays: dict[str, np.ndarray], ref: ArrayRef, dtype: torch.dtype | None) -> torch.Tensor:
    values = np.stack([arrays[n] for n in ref], axis=1) if isinstance(ref, list) else arrays[ref]
    if values.dtype == np.bool_ or values.dtype.kind == "u":
        values = values.astype(np.int64)
    tensor = torch.from_numpy(np.require(values, requirements=["C", "W"]))  # copied only if needed
    if dtype is not None:
        return tensor.to(dtype)
    return tensor.to(torch.int64) if not tensor.is_floating_point() else tensor.double()
