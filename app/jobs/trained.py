"""A succeeded job's trained model, loaded from its weights file to answer predictions.

Loaded models are kept in a small LRU (``MB_PREDICT_CACHE_SIZE``) keyed by job id and weights
sha256, and run under ``torch.inference_mode()`` in a bounded thread pool (``MB_PREDICT_THREADS``).
Inputs are checked before any tensor is made: numbers only, rectangular, within
``MB_MAX_PREDICT_SAMPLES`` and ``MB_MAX_PREDICT_NUMEL``, shaped like one of the job's dataset
samples or a batch of them, each number one the input tensor holds (an int64 token id, or a
float32); anything else is a ``SpecError`` at ``inputs`` or at the element (``inputs[1][0]``).
A graph job takes its inputs by name and answers per output (``inputs.tokens[0][3]``).
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
from app.jobs import graph_data
from app.jobs.domain import Job
from app.jobs.weights import load_weights, read_metadata
from app.schemas.jobs import JobCreate
from layers import GraphSpec, ModelSpec
from layers.analysis.graph_trace import trace_graph
from layers.language import io
from layers.language.base import FLOAT32_MAX, shape_str
from layers.language.errors import LimitError, Loc, ShapeError, SpecError
from layers.language.io import SEQUENCE_INPUT, SEQUENCE_OUTPUT, input_names, output_names
from layers.training.datasets import DatasetInfo, Named
from layers.training.losses import LossSpec

POOL = ThreadPoolExecutor(max_workers=settings.predict_threads, thread_name_prefix="predict")
INPUTS = ("inputs",)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class TrainedModel:
    job_id: str
    sha256: str
    spec: ModelSpec | GraphSpec  # inferred, as trained
    module: nn.Module  # on the CPU, in eval mode
    request: JobCreate
    data: DatasetInfo | None  # a sequence job's dataset (None for a graph: its inputs say)
    scaling: dict[str, tuple[torch.Tensor, torch.Tensor]]  # inputs standardized in training: (mean, std)

    @property
    def loss(self) -> LossSpec:
        return self.request.loss_of_sequence()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a batch of the sequence model's input, scaled as in training."""
        return self.run_named({SEQUENCE_INPUT: x})[SEQUENCE_OUTPUT]

    def run_named(self, x: Named) -> Named:
        """The model on batches by input name, scaled as in training; its outputs by name."""
        scaled = {
            n: (v - self.scaling[n][0]) / self.scaling[n][1] if n in self.scaling else v for n, v in x.items()
        }
        return io.run(self.module, scaled)


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
        data = None
        if not isinstance(spec, GraphSpec):
            data = request.dataset.describe(request.loss_of_sequence().task == "classification", settings)
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


def _shape_of(values: Any, loc: Loc = INPUTS) -> tuple[list[int], list[Any]]:
    """The shape of a nested list, level by level, and its leaves in order; ``SpecError`` at
    ``inputs`` when it is ragged or too large."""
    shape: list[int] = []
    level = [values]
    while level and isinstance(level[0], list):
        sizes = {len(v) if isinstance(v, list) else -1 for v in level}
        if len(sizes) != 1 or -1 in sizes:
            depth = len(shape)
            raise ShapeError(
                loc, f"{_label(loc)} must be a rectangular nested list (ragged at depth {depth})"
            )
        size = sizes.pop()
        if len(shape) >= settings.max_input_rank:
            raise LimitError(loc, f"{_label(loc)} has more than {settings.max_input_rank} dimensions")
        if len(level) * size > settings.max_predict_numel:
            raise LimitError(
                loc,
                f"{_label(loc)} holds more than {settings.max_predict_numel} numbers (the limit)",
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


def _refuse_at(
    flat: int, shape: list[int], msg: str, ctx: dict[str, Any] | None = None, loc: Loc = INPUTS
) -> ShapeError:
    """A ``ShapeError`` at the element ``flat`` (row-major) of inputs of ``shape``: ``inputs[1][0]``."""
    index: list[int] = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.insert(0, i)
    return ShapeError((*loc, *index), f"{_label(loc)}{''.join(f'[{i}]' for i in index)}: {msg}", ctx)


def to_batch(model: TrainedModel, inputs: Any) -> tuple[torch.Tensor, bool]:
    """The inputs as a batch tensor, and whether they were one sample (not a batch)."""
    assert model.data is not None  # a sequence job's
    return _batch(inputs, model.data.sample_shape, model.data.dtype, model.data.tokens, INPUTS)


def _batch(
    inputs: Any, sample_shape: tuple[int, ...], dtype: str, tokens: int | None, loc: Loc
) -> tuple[torch.Tensor, bool]:
    """``inputs`` (one sample of ``sample_shape`` or a batch of them) as a batch tensor of
    ``dtype`` (token ids below ``tokens``), and whether they were one sample."""
    integers, label = dtype == "int64", _label(loc)
    shape, elements = _shape_of(inputs, loc)
    sample = list(sample_shape)
    single = shape == sample
    if not single and shape[1:] != sample:
        raise ShapeError(
            loc,
            f"{'' if loc == INPUTS else label + ': '}expected one sample of shape {shape_str(sample)} "
            "or a batch of shape "
            f"{shape_str(['N', *sample])}, got {shape_str(shape)}",
            {"expected": sample, "got": shape},
        )
    if not single and not 0 < shape[0] <= settings.max_predict_samples:
        raise LimitError(
            loc,
            f"a batch of {shape[0]} samples; 1 to {settings.max_predict_samples} are accepted",
            {"limit": settings.max_predict_samples, "got": shape[0]},
        )
    for flat, v in enumerate(elements):
        if dtype == "bool":
            wrong = None if isinstance(v, bool) else f"this mask takes true or false, got {v!r}"
        else:
            wrong = _wrong_with(v, integers)
        if wrong is not None:
            raise _refuse_at(flat, shape, wrong, loc=loc)
    torch_dtype = {"int64": torch.int64, "bool": torch.bool}.get(dtype, torch.float32)
    x = torch.tensor(inputs, dtype=torch_dtype)
    if integers and tokens is not None:
        outside = ((x < 0) | (x >= tokens)).flatten().nonzero()
        if len(outside):
            flat, last = int(outside[0]), tokens - 1
            source = "the job's dataset vocabulary" if loc == INPUTS else "the Embedding reading it"
            msg = f"token ids must be in 0..{last} ({source}), got {elements[flat]}"
            raise _refuse_at(flat, shape, msg, {"expected": [0, last], "got": elements[flat]}, loc)
    return (x.unsqueeze(0) if single else x), single


def _label(loc: Loc) -> str:
    """``inputs`` or ``inputs.tokens``: the field a message names."""
    return ".".join(str(part) for part in loc)


def predict(model: TrainedModel, inputs: Any) -> dict[str, Any]:
    """Run the model; outputs (and class predictions and probabilities for a classification job).
    A graph's answer is per output: ``{"outputs": {name: {...}}}``."""
    if isinstance(model.spec, GraphSpec):
        return _predict_graph(model, model.spec, inputs)
    if isinstance(inputs, dict):
        raise ShapeError(INPUTS, "this job's model has one input: send its values as a (nested) list")
    x, single = to_batch(model, inputs)
    with torch.inference_mode():
        return _answer(model.loss, model.run(x), single)


def _answer(loss: LossSpec | None, out: torch.Tensor, single: bool) -> dict[str, Any]:
    """One output's answer: its values and shape, and with a classification ``loss`` the classes."""
    answer: dict[str, Any] = {"output_shape": list(out.shape[1:] if single else out.shape)}
    if loss is not None and loss.task == "classification":
        classes, probabilities = loss.classes(out), loss.probabilities(out)
        answer["predictions"] = classes[0].item() if single else classes.tolist()
        answer["probabilities"] = (probabilities[0] if single else probabilities).tolist()
    answer["outputs"] = (out[0] if single else out).tolist()
    return answer


def _predict_graph(model: TrainedModel, graph: GraphSpec, inputs: Any) -> dict[str, Any]:
    """A graph on its inputs by name (each one sample or a batch, all alike); answers per output."""
    if not isinstance(inputs, dict):
        raise ShapeError(
            INPUTS,
            f"this job's model is a graph: send its inputs by name, {{{', '.join(map(repr, graph.inputs))}}}",
            {"expected": list(graph.inputs)},
        )
    for name in inputs:
        if name not in graph.inputs:
            raise SpecError(
                (*INPUTS, name), f"the graph has no input {name!r}; it takes {list(graph.inputs)}"
            )
    x: Named = {}
    singles: set[bool] = set()
    for name, spec in graph.inputs.items():
        if name not in inputs:
            raise SpecError(
                (*INPUTS, name), f"the graph's input {name!r} is missing", {"expected": list(graph.inputs)}
            )
        tokens = graph_data.vocabulary(graph, name) if spec.dtype == "int64" else None
        x[name], single = _batch(inputs[name], tuple(spec.shape[1:]), spec.dtype, tokens, (*INPUTS, name))
        singles.add(single)
    batches = {t.shape[0] for t in x.values()}
    if len(singles) > 1 or len(batches) > 1:
        raise ShapeError(INPUTS, "give every input one sample, or every input a batch of the same size")
    terms = model.request.terms()
    with torch.inference_mode():
        out = model.run_named(x)
        return {"outputs": {name: _answer(terms.get(name), value, single) for name, value in out.items()}}


DATASET = ("dataset",)


def _asked_arrays(
    asked: Any, trained: UploadedDataset | None, description: Description, how: str
) -> tuple[Any, Any]:
    """The arrays of the inputs and targets to predict on: those asked, else those the job trained
    on (its targets only where this dataset has them); ``SpecError`` when no inputs are named."""
    inputs = asked.inputs if asked.inputs is not None else trained.inputs if trained else None
    if inputs is None:
        raise SpecError((*DATASET, "inputs"), f"this job did not train on an uploaded dataset: {how}")
    targets = asked.targets
    if targets is None and trained is not None:
        names = {array.name for array in description.arrays}
        refs = trained.target_arrays().values()
        wanted = [n for ref in refs for n in ([ref] if isinstance(ref, str) else ref)]
        targets = trained.targets if set(wanted) <= names else None
    return inputs, targets


def dataset_spec(model: TrainedModel, asked: Any, description: Description) -> tuple[UploadedDataset, bool]:
    """The arrays to predict on (``asked``: a ``PredictDataset``) checked against ``description``
    and the model, and whether the answer compares with targets; ``SpecError`` at ``dataset``."""
    trained = model.request.dataset if isinstance(model.request.dataset, UploadedDataset) else None
    if isinstance(model.spec, GraphSpec):
        return _graph_dataset_spec(model, model.spec, asked, trained, description)
    inputs, targets = _asked_arrays(asked, trained, description, "name the arrays of its inputs")
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
    _within_predict_samples(description)
    return checked, targets is not None


def _graph_dataset_spec(
    model: TrainedModel,
    graph: GraphSpec,
    asked: Any,
    trained: UploadedDataset | None,
    description: Description,
) -> tuple[UploadedDataset, bool]:
    """``dataset_spec`` for a graph: its inputs by name, a target for each output with a loss."""
    inputs, targets = _asked_arrays(asked, trained, description, "map its inputs to arrays by name")
    spec = UploadedDataset(id=asked.id, inputs=inputs, targets=targets or inputs)
    traced = trace_graph(graph)
    assert traced.graph is not None
    outputs = {name: tuple(value.shape[1:]) for name, (_, value) in traced.graph.outputs.items()}
    checked, _ = graph_data.plan_uploaded(
        graph, spec, description, model.request.terms(), outputs, with_targets=targets is not None
    )
    _within_predict_samples(description)
    return checked, targets is not None


def _within_predict_samples(description: Description) -> None:
    if description.samples > settings.max_predict_samples:
        raise LimitError(
            DATASET,
            f"the dataset has {description.samples} samples; predict takes at most "
            f"{settings.max_predict_samples} (MB_MAX_PREDICT_SAMPLES)",
            {"limit": settings.max_predict_samples, "got": description.samples},
        )


def predict_dataset(
    model: TrainedModel, dataset: UploadedDataset, with_targets: bool, path: Path
) -> dict[str, Any]:
    """Predictions on every sample of the dataset, with the accuracy or loss against its targets
    (a graph's: per output, those with a loss)."""
    x, y = dataset.read(path, with_targets)
    if isinstance(model.spec, GraphSpec):
        return _predict_graph_dataset(model, graph_data.as_graph_inputs(model.spec, x), y)
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


def _predict_graph_dataset(model: TrainedModel, x: Named, y: Named) -> dict[str, Any]:
    terms = model.request.terms()
    with torch.inference_mode():
        out = model.run_named(x)
        answers = {name: _answer(terms.get(name), value, False) for name, value in out.items()}
        for name, labels in y.items():
            loss, value = terms[name], out[name]
            target = loss.prepare(labels, tuple(value.shape[1:]))
            answers[name]["loss"] = loss.build()(
                value, target.to(value.dtype) if target.is_floating_point() else target
            ).item()
            if loss.task == "classification":
                answers[name]["accuracy"] = loss.correct(value, labels).item() / value.shape[0]
    return {"outputs": answers, "samples": next(iter(x.values())).shape[0]}
