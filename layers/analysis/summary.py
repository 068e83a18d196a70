"""What PyTorch knows about a model, read from a meta-device trace: shapes, parameters, FLOPs."""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel, Field

from layers.analysis.memory import Device, TrainingMemory, estimate_memory
from layers.analysis.trace import InputDType, TracedLayer, trace_model
from layers.language.model import ModelSpec
from layers.training.optimizers import OptimizerSpec


class ParamInfo(BaseModel):
    name: str = Field(description="name relative to the layer, e.g. `linear.weight`")
    shape: list[int]
    numel: int
    trainable: bool
    tied_to: str | None = Field(
        None, description="module path of the layer whose weight this is (`tie_weight`); counted there"
    )


class RepeatInfo(BaseModel):
    index: int = Field(description="which copy of the innermost enclosing Repeat's block (from 0)")
    times: int


class LayerSummary(BaseModel):
    path: str = Field(description="module path inside the model, e.g. `3.layers.0`")
    type: str
    depth: int = Field(description="0 for top-level layers, +1 inside each container")
    input_shape: list[int]
    output_shape: list[int]
    num_params: int = Field(
        description="parameters under this layer, children included; a tied one is counted once, at its owner"
    )
    params: list[ParamInfo] = Field(
        description="the layer's own parameters (a container's children list theirs)"
    )
    repeat: RepeatInfo | None = Field(None, description="set on the rows of a Repeat's copies")
    flops: int = Field(description="forward FLOPs of this layer, children included")
    output_bytes: int = Field(description="bytes of the layer's output")
    saved_bytes: int | None = Field(
        None,
        description="bytes autograd keeps for this layer's backward, children included (with `training`)",
    )
    spec: dict = Field(description="the layer's spec with inferred sizes filled in")


class ModelSummary(BaseModel):
    model_repr: str = Field(description="exactly `print(model)`")
    input_shape: list[int]
    input_dtype: str
    output_shape: list[int]
    param_dtype: str
    total_params: int = Field(description="unique parameters (shared ones counted once)")
    trainable_params: int
    param_bytes: int
    buffer_bytes: int = Field(description="non-parameter state, e.g. BatchNorm running stats")
    activation_bytes: int = Field(description="bytes of every leaf layer's forward output")
    flops: int = Field(description="forward FLOPs counted per operator by torch.utils.flop_counter")
    mult_adds: int = Field(description="forward multiply-adds: flops / 2")
    backward_flops: int | None = Field(
        None, description="backward FLOPs counted by torch.utils.flop_counter (with `training`)"
    )
    memory: TrainingMemory | None = Field(None, description="training and inference memory (with `training`)")
    uncounted_ops: list[str] = Field(
        description="operators that ran counted ones (matmuls) inside but that torch's FLOP counter has "
        "no formula for (e.g. `aten._trilinear` of Bilinear): their FLOPs are missing from `flops`"
    )
    layers: list[LayerSummary]
    model: dict = Field(description="the model spec with every inferred size filled in")


def _own_params(node: TracedLayer) -> list[ParamInfo]:
    # A container's parameters belong to its children's entries; a leaf reports all of its own.
    recurse = not node.children
    return [
        ParamInfo(
            name=name,
            shape=list(p.shape),
            numel=p.numel(),
            trainable=p.requires_grad,
            tied_to=node.tied.get(name),
        )
        for name, p in node.module.named_parameters(recurse=recurse)
    ]


def _param_counts(nodes: list[TracedLayer], params: dict[int, list[ParamInfo]]) -> dict[int, int]:
    """Each node's parameters, children included, tied ones left to their owner: bottom-up."""
    counts: dict[int, int] = {}
    for node in reversed(nodes):  # pre-order reversed: children before their parent
        own = sum(p.numel for p in params[id(node)] if p.tied_to is None)
        counts[id(node)] = own + sum(counts[id(child)] for child in node.children)
    return counts


def summarize(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    input_dtype: InputDType = "float32",
    time_budget_s: float | None = None,
    cancelled: threading.Event | None = None,
    optimizer: OptimizerSpec | None = None,
    device: Device = "cuda",
) -> ModelSummary:
    """Trace ``spec`` on the meta device and describe it; raises ``SpecError`` naming a layer.

    With ``optimizer``, also the training memory (``layers.analysis.memory``) and the backward FLOPs.
    """
    started = time.thread_time()
    traced = trace_model(spec, input_shape, input_dtype, time_budget_s, cancelled)
    estimate = None
    if optimizer is not None:
        deadline = None if time_budget_s is None else started + time_budget_s
        estimate = estimate_memory(traced, optimizer, device, deadline=deadline, budget_s=time_budget_s)
    saved = estimate.saved_by_path if estimate else {}
    params = list(traced.module.parameters())  # each tensor once, a tied one included
    own = {id(node): _own_params(node) for node in traced.layers}
    counts = _param_counts(traced.layers, own)
    layers = [
        LayerSummary(
            path=node.path,
            type=node.spec.type,
            depth=node.depth,
            input_shape=list(node.input_shape),
            output_shape=list(node.output_shape),
            num_params=counts[id(node)],
            params=own[id(node)],
            flops=node.flops,
            output_bytes=node.output.numel() * node.output.element_size(),
            saved_bytes=saved.get(node.path) if estimate else None,
            spec=node.spec.model_dump(),
            repeat=None if node.repeat is None else RepeatInfo(index=node.repeat[0], times=node.repeat[1]),
        )
        for node in traced.layers
    ]
    leaves = [node for node in traced.layers if not node.children]
    return ModelSummary(
        model_repr=str(traced.module),
        input_shape=list(traced.input_shape),
        input_dtype=input_dtype,
        output_shape=list(traced.output_shape),
        param_dtype=str(traced.param_dtype).removeprefix("torch."),
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in traced.module.buffers()),
        activation_bytes=sum(n.output.numel() * n.output.element_size() for n in leaves),
        flops=traced.flops,
        mult_adds=traced.flops // 2,
        uncounted_ops=traced.uncounted_ops,
        backward_flops=estimate.backward_flops if estimate else None,
        memory=estimate.memory if estimate else None,
        layers=layers,
        model=traced.spec.model_dump(),
    )
