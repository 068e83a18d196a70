"""Request schemas of ``POST /v1/models/summary`` and ``/fit``; the summary response is
``layers.analysis.summary.ModelSummary``."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, field_validator

from app.core.config import settings
from layers import ModelSpec
from layers.analysis.memory import Device
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
    """A model and the input it is traced for."""

    model: ModelSpec
    input_shape: InputShape
    input_dtype: InputDType = Field("float32", description='"int64" for token ids')

    @field_validator("input_shape")
    @classmethod
    def _input_not_too_large(cls, shape: list[int]) -> list[int]:
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
