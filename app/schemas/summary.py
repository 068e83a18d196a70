"""Request schema of ``POST /v1/models/summary``; the response is ``layers.summary.ModelSummary``."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, field_validator

from app.core.config import settings
from layers import ModelSpec
from layers.spec import SpecModel
from layers.trace import InputDType

InputDim = Annotated[int, Field(gt=0, le=settings.max_input_dim)]
InputShape = Annotated[
    list[InputDim],
    Field(
        min_length=1,
        max_length=settings.max_input_rank,
        description="input tensor shape, batch first, e.g. [2, 3, 28, 28]",
    ),
]


class SummaryRequest(SpecModel):
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
