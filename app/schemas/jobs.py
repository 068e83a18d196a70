"""Schemas of the training-job endpoints: ``JobCreate`` in, ``JobPublic`` / ``JobsPublic`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.core.config import settings
from app.jobs.datasets import AnyDataset
from app.jobs.retention import job_dir
from app.jobs.weights import weights_info
from layers import ModelSpec
from layers.language.spec import SpecModel
from layers.training.losses import AnyLoss
from layers.training.optimizers import AnyOptimizer

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCreate(SpecModel):
    """A short training run: a model, the data, the loss and the optimizer."""

    model: ModelSpec
    dataset: AnyDataset
    loss: AnyLoss
    optimizer: AnyOptimizer
    epochs: int = Field(5, gt=0, le=settings.max_epochs)
    batch_size: int = Field(64, gt=0, le=settings.max_batch_size)
    seed: int = Field(
        0, ge=0, lt=2**63, description="same seed on the CPU: same history (not guaranteed on CUDA)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto": CUDA when a worker has it, else CPU; "cuda" fails at once without one'
    )
    time_limit_s: float | None = Field(
        None, gt=0, le=settings.max_job_seconds, description="wall-time limit, at most the server's"
    )


class EpochResult(BaseModel):
    epoch: int
    step: int = Field(description="optimizer steps so far")
    train_loss: float = Field(description="mean training loss over the epoch")
    val_loss: float
    val_accuracy: float | None = Field(description="share of correct validation predictions (classification)")


class Metrics(BaseModel):
    train_loss: float
    val_loss: float
    val_accuracy: float | None


class Progress(BaseModel):
    epoch: int
    step: int
    steps_total: int
    loss: float = Field(description="training loss of the latest step")


class NodeInfo(BaseModel):
    node_id: str = Field(description="the Ray node the worker ran on")
    ip: str
    hostname: str
    pid: int = Field(description="the worker process")


class JobMemory(BaseModel):
    estimated_bytes: int | None = Field(description="the plan's estimate: training step peak plus data")
    measured_peak_bytes: int = Field(description="what the run really used (see `how`)")
    how: str = Field(description="how it was measured on that device")


class WeightsPublic(BaseModel):
    size_bytes: int = Field(description="size of the safetensors file")
    sha256: str = Field(description="its sha256 (hex), also its ETag")
    url: str = Field(description="where to download it")


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    device: str | None = Field(description="the device the job really used: cpu or cuda:N")
    node: NodeInfo | None
    history: list[EpochResult] = Field(description="one entry per finished epoch")
    metrics: Metrics | None = Field(description="the final epoch's losses and accuracy")
    progress: Progress | None = Field(description="the latest progress report")
    duration_s: float | None = Field(description="training wall time, from worker start to finish")
    error: str | None
    restarts: int = Field(0, description="times the job's worker died and was restarted from its checkpoint")
    memory_estimate_bytes: int = Field(
        description="the training step's peak (layers.analysis.memory) plus the data"
    )
    memory: JobMemory | None = Field(None, description="estimate against measurement, once the job succeeded")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict | None = Field(None, description="the job as submitted (left out of lists)")
    weights: WeightsPublic | None = Field(
        None, description="the trained weights of a succeeded job (safetensors); null when there are none"
    )

    @model_validator(mode="before")
    @classmethod
    def _weights_from_files(cls, data: Any) -> Any:
        # Read from the job's artifact directory (app/jobs/weights.py), not from a store column.
        if isinstance(data, dict) and "weights" not in data and data.get("status") == "succeeded":
            info = weights_info(job_dir(data["id"]))
            if info is not None:
                url = f"/v1/jobs/{data['id']}/weights"
                weights = {"size_bytes": info["size_bytes"], "sha256": info["sha256"], "url": url}
                data = {**data, "weights": weights}
        return data


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="all stored jobs")
