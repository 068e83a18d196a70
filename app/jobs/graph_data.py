"""A graph job's data: its uploaded dataset checked against the graph's named inputs and lossed
outputs, and seeded synthetic data made from the graph's own input shapes and dtypes.

Synthetic data for a graph: one tensor per input (float32: standard normal; int64: token ids below
the size of the Embedding that reads the input, else below the dataset's ``vocab_size``; bool: all
False, a mask that hides nothing), and a target per output that has a loss, from a fixed random
linear teacher on the inputs (float inputs flattened, token ids through a random per-token table):
class indices (the argmax over the output's classes) for a classification loss, the teacher's
values (plus noise) shaped as the output for a regression loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from app.datasets.description import Description
from app.datasets.uploaded import UploadedDataset
from layers.analysis.graph_trace import GRAPH_DTYPES
from layers.language.base import ContainerSpec, LayerSpec, Shape, shape_str
from layers.language.errors import ShapeError, SpecError
from layers.language.graph import GraphSpec
from layers.training.datasets import Named, SyntheticDataset
from layers.training.losses import LossSpec, Targets

TOKEN_FEATURES = 16  # features per token-id input in the synthetic teacher


@dataclass(frozen=True)
class GraphData:
    """What the plan knows of a graph job's data before queueing it."""

    samples: int
    input_bytes: int  # every input and target of every sample, as the worker holds them


def vocabulary(graph: GraphSpec, name: str) -> int | None:
    """The embeddings of the (first) Embedding that reads the graph input ``name``, if one does."""
    for node in graph.nodes:
        if node.main_refs() != [name]:
            continue
        spec: LayerSpec | None = node.layer()
        while isinstance(spec, ContainerSpec):
            children = getattr(spec, "layers", None) or []
            spec = children[0] if children else None
        size = getattr(spec, "num_embeddings", None)
        if size is not None:
            return size
    return None


def per_sample(graph: GraphSpec, name: str) -> Shape:
    return tuple(graph.inputs[name].shape[1:])


def targets_of(loss: LossSpec, output: Shape) -> Targets:
    """The synthetic targets an output with ``loss`` gets: its classes, or values of its shape."""
    if loss.task == "classification":
        return Targets(num_classes=max(2, output[-1]) if output else 2, shape=())
    return Targets(num_classes=None, shape=output)


def check_loss(name: str, loss: LossSpec, output: Shape, targets: Targets) -> None:
    """``loss`` against the output ``name`` and its targets; errors at ``losses.<name>``."""
    try:
        loss.check(output, targets, ("model", "outputs", name))
    except SpecError as e:
        if e.loc[:1] == ("loss",):
            raise type(e)(("losses", name, *e.loc[1:]), e.msg, e.ctx) from e
        raise


def plan_synthetic(
    graph: GraphSpec, dataset: SyntheticDataset, terms: dict[str, LossSpec], outputs: dict[str, Shape]
) -> GraphData:
    for name, loss in terms.items():
        check_loss(name, loss, outputs[name], targets_of(loss, outputs[name]))
    per = sum(
        math.prod(per_sample(graph, n)) * GRAPH_DTYPES[i.dtype].itemsize for n, i in graph.inputs.items()
    )
    per += sum(4 * math.prod(outputs[n]) for n in terms)
    return GraphData(dataset.samples, dataset.samples * per)


def plan_uploaded(
    graph: GraphSpec,
    dataset: UploadedDataset,
    description: Description,
    terms: dict[str, LossSpec],
    outputs: dict[str, Shape],
    with_targets: bool = True,
) -> tuple[UploadedDataset, GraphData]:
    """The dataset checked against the graph: every input by name at its shape (token ids within
    the Embedding that reads them), a target for each lossed output (``with_targets``)."""
    if not isinstance(dataset.inputs, dict):
        raise SpecError(
            ("dataset", "inputs"),
            "a graph model's inputs are mapped by name: {"
            + ", ".join(f"{n!r}: array" for n in graph.inputs)
            + "}",
            {"expected": list(graph.inputs)},
        )
    planned = dataset.plan(description, graph.input_names, tuple(terms), False, with_targets)
    per = 0
    for name, ref in planned.input_arrays().items():
        loc = ("dataset", "inputs", name)
        shape, info = planned.info_of(ref)
        if shape != per_sample(graph, name):
            raise ShapeError(
                loc,
                f"the graph's input {name!r} takes samples of shape {shape_str(per_sample(graph, name))}; "
                f"array {info.name!r} has {shape_str(shape)}",
                {"expected": list(per_sample(graph, name)), "got": list(shape)},
            )
        dtype = graph.inputs[name].dtype
        if dtype == "int64":
            integral = info.dtype.startswith(("int", "uint", "bool")) or info.classes is not None
            if not integral or info.min < 0:
                raise SpecError(
                    loc,
                    f"the graph's input {name!r} takes token ids: array {info.name!r} holds {info.dtype} "
                    f"values from {info.min:g} to {info.max:g}",
                )
            size = vocabulary(graph, name)
            if size is not None and info.max >= size:
                raise ShapeError(
                    loc,
                    f"array {info.name!r} holds token ids up to {info.max:g}, but the Embedding reading "
                    f"{name!r} has {size} embeddings (ids 0..{size - 1})",
                    {"expected_below": size, "got": info.max},
                )
        per += math.prod(shape) * GRAPH_DTYPES[dtype].itemsize
    classification = {n for n, loss in terms.items() if loss.task == "classification"}
    for name, ref in planned.target_arrays().items() if with_targets else ():
        shape, info = planned.info_of(ref)
        loss = terms[name]
        if name in classification:
            planned_one = planned.model_copy(update={"targets": {name: ref}})
            planned_one.check_targets(True)
            targets = Targets(num_classes=max(2, int(info.max) + 1), shape=())
        else:
            targets = Targets(num_classes=None, shape=shape)
        check_loss(name, loss, outputs[name], targets)
        per += 4 * max(1, math.prod(outputs[name]))
    return planned, GraphData(description.samples, description.samples * per)


def as_graph_inputs(graph: GraphSpec, x: Named) -> Named:
    """Each input in its graph dtype (an uploaded array is read as float32 or int64)."""
    return {name: x[name].to(GRAPH_DTYPES[graph.inputs[name].dtype]) for name in graph.input_names}


def synthetic(
    graph: GraphSpec, dataset: SyntheticDataset, terms: dict[str, LossSpec], outputs: dict[str, Shape]
) -> tuple[Named, Named]:
    """The seeded inputs by name and the teacher's targets of each lossed output (module doc)."""
    g = torch.Generator().manual_seed(dataset.seed)
    n = dataset.samples
    x: Named = {}
    features: list[torch.Tensor] = []
    for name, spec in graph.inputs.items():
        shape = (n, *spec.shape[1:])
        if spec.dtype == "bool":
            x[name] = torch.zeros(shape, dtype=torch.bool)
        elif spec.dtype == "int64":
            vocab = vocabulary(graph, name) or dataset.vocab_size
            x[name] = torch.randint(0, vocab, shape, generator=g)
            table = torch.randn(vocab, TOKEN_FEATURES, generator=g)
            features.append(table[x[name].reshape(n, -1)].mean(dim=1))
        else:
            x[name] = torch.randn(shape, generator=g)
            features.append(x[name].reshape(n, -1) / math.sqrt(math.prod(shape[1:])))
    inputs = torch.cat(features, dim=1) if features else torch.ones(n, 1)
    y: Named = {}
    for name, loss in terms.items():
        targets = targets_of(loss, outputs[name])
        width = targets.num_classes or math.prod(targets.shape)
        teacher = inputs @ torch.randn(inputs.shape[1], width, generator=g)
        if targets.num_classes is not None:
            y[name] = teacher.argmax(dim=1)
        else:
            noise = dataset.noise * torch.randn(teacher.shape, generator=g)
            y[name] = (teacher + noise).reshape(n, *targets.shape)
    return x, y
