"""Schemas of the trained-model endpoints: export a spec or a job, and predict with a job's model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.datasets.uploaded import Mapping
from app.schemas.summary import SummaryRequest
from layers.export import EXPORTERS
from layers.language.spec import SpecModel

ExportFormat = Literal[tuple(EXPORTERS)]  # type: ignore[valid-type]
FORMAT_DESCRIPTION = "; ".join(f'"{name}": {exporter.description}' for name, exporter in EXPORTERS.items())


class ExportRequest(SummaryRequest):
    """A model spec to export, traced at ``input_shape`` (the shape its code's example runs on)."""

    format: ExportFormat = Field("pytorch", description=FORMAT_DESCRIPTION)


class PredictDataset(SpecModel):
    """An uploaded dataset to predict on: which arrays are the model's inputs, and its targets."""

    id: str = Field(pattern="^[0-9a-f]{64}$", description="the dataset's id (its sha256)")
    inputs: Mapping | None = Field(None, description="as a job's; null: the job's own (trained on a dataset)")
    targets: Mapping | None = Field(
        None, description="as a job's; null: the job's own, when this dataset has those arrays (else none)"
    )


class PredictRequest(SpecModel):
    inputs: list[Any] | dict[str, Any] | None = Field(
        None,
        description="one sample shaped like the job's dataset samples (e.g. [1, 8, 8] for digits), "
        "or a batch of them, as nested lists of numbers (integers for token ids); a graph job's by "
        "input name ({name: values}, booleans for masks)",
    )
    dataset: str | PredictDataset | None = Field(
        None,
        description="instead of inputs: an uploaded dataset's id (its arrays mapped as the job's), or "
        "{id, inputs, targets}; with targets the answer has the accuracy or loss",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if (self.inputs is None) == (self.dataset is None):
            raise ValueError("give either inputs or dataset")
        return self

    def dataset_request(self) -> PredictDataset | None:
        return PredictDataset(id=self.dataset) if isinstance(self.dataset, str) else self.dataset


class OutputPrediction(BaseModel):
    """One output of a graph job's answer: as a sequence job's answer."""

    outputs: list[Any] | float = Field(description="this output, for the sample or each sample of the batch")
    output_shape: list[int]
    predictions: int | list[int] | None = Field(
        None, description="class indices, for an output with a classification loss"
    )
    probabilities: list[Any] | None = None
    accuracy: float | None = Field(None, description="against the dataset's targets (classification)")
    loss: float | None = Field(
        None, description="this output's loss against the dataset's targets (unweighted)"
    )


class PredictResponse(BaseModel):
    outputs: list[Any] | dict[str, OutputPrediction] = Field(
        description="the model's output, for the sample or each sample of the batch; a graph's by output name"
    )
    output_shape: list[int] | None = Field(None, description="the output's shape (a graph's: per output)")
    predictions: int | list[int] | None = Field(
        None, description="the predicted class index (or one per sample), for a classification job"
    )
    probabilities: list[Any] | None = Field(None, description="class probabilities, for a classification job")
    samples: int | None = Field(None, description="samples predicted, for a dataset")
    accuracy: float | None = Field(
        None, description="against the dataset's targets, for a classification job"
    )
    loss: float | None = Field(None, description="the job's loss against the dataset's targets")
