"""Schemas of the trained-model endpoints: export a spec or a job, and predict with a job's model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.summary import SummaryRequest
from layers.export import EXPORTERS
from layers.language.spec import SpecModel

ExportFormat = Literal[tuple(EXPORTERS)]  # type: ignore[valid-type]
FORMAT_DESCRIPTION = "; ".join(f'"{name}": {exporter.description}' for name, exporter in EXPORTERS.items())


class ExportRequest(SummaryRequest):
    """A model spec to export, traced at ``input_shape`` (the shape its code's example runs on)."""

    format: ExportFormat = Field("pytorch", description=FORMAT_DESCRIPTION)


class PredictRequest(SpecModel):
    inputs: list[Any] = Field(
        description="one sample shaped like the job's dataset samples (e.g. [1, 8, 8] for digits), "
        "or a batch of them, as nested lists of numbers (integers for token ids)"
    )


class PredictResponse(BaseModel):
    outputs: list[Any] = Field(description="the model's output, for the sample or each sample of the batch")
    output_shape: list[int]
    predictions: int | list[int] | None = Field(
        None, description="the predicted class index (or one per sample), for a classification job"
    )
    probabilities: list[Any] | None = Field(None, description="class probabilities, for a classification job")
