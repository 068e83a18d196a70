"""What PyTorch knows about a model, read from a meta-device trace: shapes, parameters, FLOPs."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field
from torch import nn

from layers.memory import Device, TrainingMemory, estimate_memory
from layers.model import ModelSpec
from layers.optimizers import OptimizerSpec
from layers.trace import InputDType, TracedLayer, trace_model


class ParamInfo(BaseModel):
    name: str = Field(description="name relative to the layer, e.g. `linear.weight`")
    shape: list[int]
    numel: int
    trainable: bool


class LayerSummary(BaseModel):
    path: str = Field(description="module path inside the model, e.g. `3.layers.0`")
    type: str
    depth: int = Field(description="0 for top-level layers, +1 inside each container")
    input_shape: list[int]
    output_shape: list[int]
    num_params: int = Field(description="parameters under this layer, children included")
    params: list[ParamInfo] = Field(
        description="the layer's own parameters (a container's children list theirs)"
    )
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
    layers: list[LayerSummary]
    model: dict = Field(description="the model spec with every inferred size filled in")


def _own_params(node: TracedLayer) -> list[ParamInfo]:
    # A container's parameters belong to its children's entries; a leaf reports all of its own.
    recurse = not node.children
    return [
        ParamInfo(name=name, shape=list(p.shape), numel=p.numel(), trainable=p.requires_grad)
        for name, p in node.module.named_parameters(recurse=recurse)
    ]


def _unique_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters())  # nn.Module.parameters() yields each tensor once


def summarize(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    input_dtype: InputDType = "float32",
    time_budget_s: float | None = None,
    optimizer: OptimizerSpec | None = None,
    device: Device = "cuda",
) -> ModelSummary:
    """Trace ``spec`` on the meta device and describe it; raises ``SpecError`` naming a layer.

    With ``optimizer``, also the training memory (``layers.memory``) and the backward FLOPs.
    """
    started = time.thread_time()
    traced = trace_model(spec, input_shape, input_dtype, time_budget_s)
    estimate = None
    if optimizer is not None:
        deadline = None if time_budget_s is None else started + time_budget_s
        estimate = estimate_memory(traced, optimizer, device, deadline=deadline, budget_s=time_budget_s)
    saved = estimate.saved_by_path if estimate else {}
    params = _unique_params(traced.module)
    layers = [
        LayerSummary(
            path=node.path,
            type=node.spec.type,
            depth=node.depth,
            input_shape=list(node.input_shape),
            output_shape=list(node.output_shape),
            num_params=sum(p.numel() for p in _unique_params(node.module)),
            params=_own_params(node),
            flops=node.flops,
            output_bytes=node.output.numel() * node.output.element_size(),
            saved_bytes=saved.get(node.path) if estimate else None,
            spec=node.spec.model_dump(),
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
        backward_flops=estimate.backward_flops if estimate else None,
        memory=estimate.memory if estimate else None,
        layers=layers,
        model=traced.spec.model_dump(),
    )
