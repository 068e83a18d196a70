"""A succeeded job's trained model, loaded from its weights file to answer predictions.

Loaded models are kept in a small LRU (``MB_PREDICT_CACHE_SIZE``) keyed by job id and weights
sha256, and run under ``torch.inference_mode()`` in a bounded thread pool (``MB_PREDICT_THREADS``).
Inputs are checked before any tensor is made: numbers only, rectangular, within
``MB_MAX_PREDICT_SAMPLES`` and ``MB_MAX_PREDICT_NUMEL``, shaped like one of the job's dataset
samples or a batch of them, each number one the input tensor holds (an int64 token id, or a
float32); anything else is a ``SpecError`` at ``inputs`` or at the element (``inputs[1][0]``).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.core.config import settings
from app.datasets.description import Description
from app.datasets.uploaded import UploadedDataset
from app.jobs.domain import Job
from app.jobs.weights import load_weights, read_metadata
from app.schemas.jobs import JobCreate
from layers import ModelSpec
from layers.language.base import FLOAT32_MAX, shape_str
from layers.language.errors import LimitError, ShapeError, SpecError
from layers.language.io import SEQUENCE_INPUT, input_names, output_names
from layers.training.datasets import DatasetInfo
from layers.training.losses import LossSpec

POOL = ThreadPoolExecutor(max_workers=settings.predict_threads, thread_name_prefix="predict")
INPUTS = ("inputs",)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class TrainedModel:
    job_id: str
    sha256: str
    spec: ModelSpec  # inferred, as trained
    module: nn.Module  # on the CPU, in eval mode
    request: JobCreate
    data: DatasetInfo
    scaling: dict[str, tuple[torch.Tensor, torch.Tensor]]  # inputs standardized in training: (mean, std)

    @property
    def loss(self) -> LossSpec:
        return self.request.loss

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a batch of the sequence model's input, scaled as in training."""
        if SEQUENCE_INPUT in self.scaling:
            mean, std = self.scaling[SEQUENCE_INPUT]
            x = (x - mean) / std
        return self.module(x)


class TrainedModels:
    """The LRU of loaded models; ``get`` loads on a miss (outside the lock: loads may overlap)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str], TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: Job, weights: Path, sha256: str) -> TrainedModel:
        key = (job.id, sha256)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        request = JobCreate.model_validate(job.request)
        spec, module = load_weights(weights)
        data = request.dataset.describe(request.loss.task == "classification", settings)
        model = TrainedModel(job.id, sha256, spec, module, request, data, scaling_of(weights))
        with self._lock:
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model


MODELS = TrainedModels(settings.predict_cache_size)


def scaling_of(weights: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The standardized inputs' statistics the job kept in its weights' metadata."""
    stats = json.loads(read_metadata(weights).get("standardize", "{}"))
    return {name: (torch.tensor(s["mean"]), torch.tensor(s["std"])) for name, s in stats.items()}


def _shape_of(values: Any) -> tuple[list[int], list[Any]]:
    """The shape of a nested list, level by level, and its leaves in order; ``SpecError`` at
    ``inputs`` when it is ragged or too large."""
    shape: list[int] = []
    level = [values]
    while level and isinstance(level[0], list):
        sizes = {len(v) if isinstance(v, list) else -1 for v in level}
        if len(sizes) != 1 or -1 in sizes:
            depth = len(shape)
            raise ShapeError(INPUTS, f"inputs must be a rectangular nested list (ragged at depth {depth})")
        size = sizes.pop()
        if len(shape) >= settings.max_input_rank:
            raise LimitError(INPUTS, f"inputs have more than {settings.max_input_rank} dimensions")
        if len(level) * size > settings.max_predict_numel:
            raise LimitError(
                INPUTS,
                f"inputs hold more than {settings.max_predict_numel} numbers (the limit)",
                {"limit": settings.max_predict_numel},
            )
        shape.append(size)
        level = [item for v in level for item in v]
    return shape, level


def _show(v: int | float) -> str:
    """``v`` for a message; a huge integer by its length (10**400 has 401 digits)."""
    text = repr(v)
    return text if len(text) <= 40 else f"an integer of {len(text.lstrip('-'))} digits"


def _wrong_with(v: Any, integers: bool) -> str | None:
    """Why one input element cannot go into the model's input tensor (int64 token ids or
    float32 numbers), or None when it can."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"inputs must hold only numbers, got {type(v).__name__}"
    if isinstance(v, float) and not math.isfinite(v):
        return "inputs must be finite numbers"
    if integers and not (isinstance(v, int) or v.is_integer()):
        return f"this model takes integer token ids, got {v!r}"
    if integers and not INT64_MIN <= v <= INT64_MAX:
        return f"token ids are int64, from {INT64_MIN} to {INT64_MAX}; got {_show(v)}"
    if not integers and abs(v) > FLOAT32_MAX:  # torch would make it inf, or fail to convert it
        return f"this model takes float32 inputs, from -{FLOAT32_MAX:g} to {FLOAT32_MAX:g}; got {_show(v)}"
    return None


def _refuse_at(flat: int, shape: list[int], msg: str, ctx: dict[str, Any] | None = None) -> ShapeError:
    """A ``ShapeError`` at the element ``flat`` (row-major) of inputs of ``shape``: ``inputs[1][0]``."""
    index: list[int] = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.insert(0, i)
    return ShapeError((*INPUTS, *index), f"inputs{''.join(f'[{i}]' for i in index)}: {msg}", ctx)


def to_batch(model: TrainedModel, inputs: Any) -> tuple[torch.Tensor, bool]:
    """The inputs as a batch tensor, and whether they were one sample (not a batch)."""
    integers = model.data.dtype == "int64"
    shape, elements = _shape_of(inputs)
    sample = list(model.data.sample_shape)
    single = shape == sample
    if not single and shape[1:] != sample:
        raise ShapeError(
            INPUTS,
            f"expected one sample of shape {shape_str(sample)} or a batch of shape "
            f"{shape_str(['N', *sample])}, got {shape_str(shape)}",
            {"expected": sample, "got": shape},
        )
    if not single and not 0 < shape[0] <= settings.max_predict_samples:
        raise LimitError(
            INPUTS,
            f"a batch of {shape[0]} samples; 1 to {settings.max_predict_samples} are accepted",
            {"limit": settings.max_predict_samples, "got": shape[0]},
        )
    for flat, v in enumerate(elements):
        if (wrong := _wrong_with(v, integers)) is not None:
            raise _refuse_at(flat, shape, wrong)
    x = torch.tensor(inputs, dtype=torch.int64 if integers else torch.float32)
    if integers and model.data.tokens is not None:
        outside = ((x < 0) | (x >= model.data.tokens)).flatten().nonzero()
        if len(outside):
            flat, last = int(outside[0]), model.data.tokens - 1
            msg = f"token ids must be in 0..{last} (the job's dataset vocabulary), got {elements[flat]}"
            raise _refuse_at(flat, shape, msg, {"expected": [0, last], "got": elements[flat]})
    return (x.unsqueeze(0) if single else x), single


def predict(model: TrainedModel, inputs: Any) -> dict[str, Any]:
    """Run the model; outputs (and class predictions and probabilities for a classification job)."""
    x, single = to_batch(model, inputs)
    with torch.inference_mode():
        out = model.run(x)
        answer: dict[str, Any] = {"output_shape": list(out.shape[1:] if single else out.shape)}
        if model.loss.task == "classification":
            classes, probabilities = model.loss.classes(out), model.loss.probabilities(out)
            answer["predictions"] = classes[0].item() if single else classes.tolist()
            answer["probabilities"] = (probabilities[0] if single else probabilities).tolist()
        answer["outputs"] = (out[0] if single else out).tolist()
    return answer


DATASET = ("dataset",)


def dataset_spec(model: TrainedModel, asked: Any, description: Description) -> tuple[UploadedDataset, bool]:
    """The arrays to predict on (``asked``: a ``PredictDataset``) checked against ``description``
    and the model, and whether the answer compares with targets; ``SpecError`` at ``dataset``."""
    trained = model.request.dataset if isinstance(model.request.dataset, UploadedDataset) else None
    inputs = asked.inputs if asked.inputs is not None else trained.inputs if trained else None
    if inputs is None:
        msg = "this job did not train on an uploaded dataset: name the arrays of its inputs"
        raise SpecError((*DATASET, "inputs"), msg)
    targets = asked.targets
    if targets is None and trained is not None:
        names = {array.name for array in description.arrays}
        wanted = [
            n for ref in trained.target_arrays().values() for n in (ref if isinstance(ref, list) else [ref])
        ]
        targets = trained.targets if set(wanted) <= names else None
    spec = UploadedDataset(id=asked.id, inputs=inputs, targets=targets or inputs, dtype=model.data.dtype)
    outputs = output_names(model.spec)
    checked = spec.plan(
        description, input_names(model.spec), outputs, False, with_targets=targets is not None
    )
    checked.check_targets(targets is not None and model.loss.task == "classification")
    (ref,) = checked.input_arrays().values()
    shape, _ = checked.info_of(ref)
    if shape != model.data.sample_shape:
        raise ShapeError(
            (*DATASET, "inputs"),
            f"the dataset's samples are {shape_str(shape)}; the job trained on "
            f"{shape_str(model.data.sample_shape)}",
            {"expected": list(model.data.sample_shape), "got": list(shape)},
        )
    if description.samples > settings.max_predict_samples:
        raise LimitError(
            DATASET,
            f"the dataset has {description.samples} samples; predict takes at most "
            f"{settings.max_predict_samples} (MB_MAX_PREDICT_SAMPLES)",
            {"limit": settings.max_predict_samples, "got": description.samples},
        )
    return checked, targets is not None


def predict_dataset(
    model: TrainedModel, dataset: UploadedDataset, with_targets: bool, path: Path
) -> dict[str, Any]:
    """Predictions on every sample of the dataset, with the accuracy or loss against its targets."""
    x, y = dataset.read(path, with_targets)
    (inputs,) = x.values()
    with torch.inference_mode():
        out = model.run(inputs)
        answer: dict[str, Any] = {"output_shape": list(out.shape), "samples": out.shape[0]}
        if model.loss.task == "classification":
            answer["predictions"] = model.loss.classes(out).tolist()
            answer["probabilities"] = model.loss.probabilities(out).tolist()
        answer["outputs"] = out.tolist()
        if with_targets:
            (labels,) = y.values()
            target = model.loss.prepare(labels, tuple(out.shape[1:]))
            answer["loss"] = model.loss.build()(out, target).item()
            if model.loss.task == "classification":
                answer["accuracy"] = model.loss.correct(out, labels).item() / out.shape[0]
    return answer
