"""Schemas of ``POST /v1/models/summary`` and ``/fit``: the requests, and the summary's answer,
which ``app.analysis`` makes from the analyses' plain data (``layers.analysis``)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticKnownError

from app.core.config import settings
from layers import AnyModel, GraphSpec
from layers.analysis.memory import Device, Phase
from layers.analysis.trace import InputDType
from layers.language.spec import SpecModel
from layers.training.optimizers import AnyOptimizer

InputDim = Annotated[int, Field(gt=0, le=settings.max_input_dim)]
InputShape = Annotated[
    list[InputDim],
    Field(
        min_length=1,
        max_length=settings.max_input_rank,
        description="input tensor shape, batch first, e.g. [2, 3, 28, 28]",
    ),
]


TargetDevice = Annotated[
    Device,
    Field(
        description="the device to count for: the optimizer's implementation there (CUDA's foreach "
        "kernels keep parameter-sized temporaries, the CPU's loop one parameter's)"
    ),
]


class TrainingOptions(SpecModel):
    """Ask for the training memory: the optimizer (the same specs as jobs) and the device."""

    optimizer: AnyOptimizer
    device: TargetDevice = "cuda"


class ModelInput(SpecModel):
    """A model and the input it is traced for: a sequence model at ``input_shape``, a graph at the
    shapes of its own ``inputs``."""

    model: AnyModel
    input_shape: InputShape | None = Field(
        None,
        validate_default=True,
        description="the sequence form's input shape (a graph's are in its `inputs`)",
    )
    input_dtype: InputDType = Field("float32", description='"int64" for token ids (the sequence form)')

    @field_validator("input_shape")
    @classmethod
    def _input_not_too_large(cls, shape: list[int] | None, info: ValidationInfo) -> list[int] | None:
        graph = isinstance(info.data.get("model"), GraphSpec)
        if graph and shape is not None:
            raise ValueError(
                "a graph model's input shapes are in its `inputs` ({name: {shape, dtype}}); leave "
                "input_shape out"
            )
        if shape is None:
            if "model" in info.data and not graph:
                raise PydanticKnownError("missing")  # as when the field was required
            return shape
        numel = math.prod(shape)
        if numel > settings.max_input_numel:
            raise ValueError(f"input_shape has {numel} elements; the limit is {settings.max_input_numel}")
        return shape


class SummaryRequest(ModelInput):
    training: TrainingOptions | None = Field(
        None, description="with it, the response has `memory`, `backward_flops` and per-layer `saved_bytes`"
    )


class FitRequest(ModelInput):
    """Does a training step fit ``device_memory_bytes``, and what is the largest batch that does?"""

    optimizer: AnyOptimizer
    device: TargetDevice = "cuda"
    device_memory_bytes: int = Field(
        strict=True, gt=0, le=1 << 50, description="memory of the device, in bytes (a positive integer)"
    )


# ---- the answer ------------------------------------------------------------------------------
# Read from the analyses' dataclasses (``from_attributes``).


def _absent(value: object) -> bool:
    return value is None  # fields of the graph form, left out of a sequence's summary


class ParamInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    # A graph's own nodes only (absent elsewhere):
    node: str | None = Field(
        None, exclude_if=_absent, description="the graph node's name (a graph's own nodes)"
    )
    input_shapes: list[list[int]] | None = Field(
        None,
        exclude_if=_absent,
        description="a graph node's: one shape per input, `input`/`inputs` first, then tensor arguments",
    )
    output_shapes: list[list[int]] | None = Field(
        None, exclude_if=_absent, description="a graph node's: one shape per output (`name.0`, `name.1`...)"
    )


class MemoryBreakdown(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    parameters: int
    buffers: int
    gradients: int = Field(description="one gradient per trainable parameter")
    optimizer_state: int = Field(description="what the optimizer keeps after its first step")
    activations: int = Field(description="bytes autograd holds for backward when the forward ends")
    temporary: int = Field(
        description="the rest of the peak: the loss, gradients in flight, kernels' scratch; negative "
        "when the peak comes where not all of the above coexist (in the optimizer step, once "
        "activations are freed)"
    )


class TrainingMemory(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    training_peak_bytes: int = Field(
        description="peak of live memory over a training step (forward, loss, backward, optimizer step) "
        "once the optimizer state exists"
    )
    peak_phase: Phase
    breakdown: MemoryBreakdown
    inference_peak_bytes: int = Field(description="peak of a forward under no_grad")
    optimizer: str
    device: Device = Field(description="the optimizer implementation counted: CUDA's foreach or CPU's loop")
    notes: list[str] = Field(description="how layers torch cannot see into were measured")


class GraphInputInfo(BaseModel):
    shape: list[int]
    dtype: str


class GraphOutputInfo(BaseModel):
    node: str = Field(description="the ref the output names (`enc`, `sp.1`)")
    shape: list[int]


class GraphEdge(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, populate_by_name=True)

    source: str = Field(alias="from", description="a graph input or a node's ref (`enc`, `sp.1`)")
    to: str = Field(description="the node it goes into")
    arg: str = Field(description="where: `input`, `inputs.0`..., or a tensor argument (`memory`)")


class GraphSummary(BaseModel):
    inputs: dict[str, GraphInputInfo]
    outputs: dict[str, GraphOutputInfo]
    edges: list[GraphEdge] = Field(description="every wire, node by node in topological order")


class ModelSummary(BaseModel):
    model_repr: str = Field(description="exactly `print(model)`")
    input_shape: list[int] = Field(description="the input's shape (a graph's first input's)")
    input_dtype: str
    output_shape: list[int] = Field(description="the output's shape (a graph's first output's)")
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
    graph: GraphSummary | None = Field(
        None,
        exclude_if=_absent,
        description="a graph model's inputs, outputs and edges (absent for a sequence)",
    )
