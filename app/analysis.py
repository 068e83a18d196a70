"""The analyses of ``layers.analysis`` within the service's limits, and the summary they make.

The trace, the memory estimate and the parameter count are separate functions returning plain
data; the summary route, ``/fit``, the exports and the job plan each combine the ones they need.
Errors are located in the request body (``model``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.core.config import settings
from app.schemas.summary import (
    GraphEdge,
    GraphInputInfo,
    GraphOutputInfo,
    GraphSummary,
    LayerSummary,
    ModelSummary,
    RepeatInfo,
)
from layers import GraphSpec, ModelSpec
from layers.analysis.budget import TraceBudget
from layers.analysis.cache import TraceCache
from layers.analysis.graph_trace import trace_graph
from layers.analysis.memory import Device, MemoryEstimate, estimate_memory
from layers.analysis.params import count_params
from layers.analysis.trace import InputDType, TracedModel, trace_model
from layers.language.errors import SpecError
from layers.training.optimizers import OptimizerSpec

# Each layer's trace, kept for this process's later traces: an edited model re-traces only the
# layers the edit changed.
TRACE_CACHE = TraceCache(settings.trace_cache_bytes)


def trace(
    model: ModelSpec | GraphSpec,
    input_shape: Sequence[int] | None,
    input_dtype: InputDType,
    budget: TraceBudget,
) -> TracedModel:
    """A sequence model traced at ``input_shape``, a graph at its own inputs."""
    try:
        if isinstance(model, GraphSpec):
            return trace_graph(model, budget, TRACE_CACHE)
        assert input_shape is not None  # the request schemas require it for a sequence
        return trace_model(model, tuple(input_shape), input_dtype, budget, TRACE_CACHE)
    except SpecError as e:
        raise e.under("model") from e


def estimate(
    traced: TracedModel, optimizer: OptimizerSpec, device: Device, budget: TraceBudget, inference: bool = True
) -> MemoryEstimate:
    try:
        return estimate_memory(traced, optimizer, device, budget=budget, inference=inference)
    except SpecError as e:
        raise e.under("model") from e


def summary(traced: TracedModel, memory: MemoryEstimate | None = None) -> ModelSummary:
    """The summary's answer: the trace and its parameters, and with ``memory`` the training memory."""
    params = count_params(traced)
    saved = memory.saved_by_path if memory else {}
    layers = [
        LayerSummary(
            path=node.path,
            type=node.spec.type,
            depth=node.depth,
            input_shape=list(node.input_shape),
            output_shape=list(node.output_shape),
            num_params=params.counts[node.path],
            params=params.own[node.path],
            flops=node.flops,
            output_bytes=sum(_bytes(t) for t in node.outputs),
            saved_bytes=saved.get(node.path) if memory else None,
            spec=node.spec.model_dump(),
            repeat=None if node.repeat is None else RepeatInfo(index=node.repeat[0], times=node.repeat[1]),
            node=None if node.input_shapes is None else node.path,
            input_shapes=None if node.input_shapes is None else [list(s) for s in node.input_shapes],
            output_shapes=None if node.input_shapes is None else [list(t.shape) for t in node.outputs],
        )
        for node in traced.layers
    ]
    leaves = [node for node in traced.layers if not node.children]
    return ModelSummary(
        model_repr=str(traced.module),
        input_shape=list(traced.input_shape),
        input_dtype=str(traced.input_dtype).removeprefix("torch."),
        output_shape=list(traced.output_shape),
        param_dtype=str(traced.param_dtype).removeprefix("torch."),
        total_params=params.total,
        trainable_params=params.trainable,
        param_bytes=params.param_bytes,
        buffer_bytes=params.buffer_bytes,
        activation_bytes=sum(_bytes(t) for node in leaves for t in node.outputs),
        flops=traced.flops,
        mult_adds=traced.flops // 2,
        uncounted_ops=traced.uncounted_ops,
        backward_flops=memory.backward_flops if memory else None,
        memory=memory.memory if memory else None,
        layers=layers,
        model=traced.spec.dump() if isinstance(traced.spec, GraphSpec) else traced.spec.model_dump(),
        graph=_graph(traced),
    )


def _graph(traced: TracedModel) -> GraphSummary | None:
    graph = traced.graph
    if graph is None:
        return None
    return GraphSummary(
        inputs={
            name: GraphInputInfo(shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."))
            for name, t in graph.inputs.items()
        },
        outputs={
            name: GraphOutputInfo(node=ref, shape=list(t.shape)) for name, (ref, t) in graph.outputs.items()
        },
        edges=[GraphEdge(source=e.source, to=e.target, arg=e.arg) for e in graph.edges],
    )


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def summarize(
    model: ModelSpec | GraphSpec,
    input_shape: Sequence[int] | None = None,
    input_dtype: InputDType = "float32",
) -> ModelSummary:
    """The summary of ``model`` without training, unbounded (the warm-up's, a benchmark's)."""
    if isinstance(model, GraphSpec):
        return summary(trace_graph(model))
    assert input_shape is not None, "a sequence model is traced at an input_shape"
    return summary(trace_model(model, tuple(input_shape), input_dtype))
