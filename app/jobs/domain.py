"""The job domain: a job's status, the job as the store keeps it, and what its worker reports.

One model per concept, shared by the worker's events (``app.jobs.events``), the store
(``app.jobs.store``, which returns ``Job``) and the API's schemas (``app.schemas.jobs``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)


class NodeInfo(Report):
    node_id: str = Field(description="the Ray node the worker ran on")
    ip: str
    hostname: str
    pid: int = Field(description="the worker process")


class Progress(Report):
    epoch: int
    step: int
    steps_total: int
    loss: float = Field(description="training loss of the latest step")


class OutputMetrics(Report):  # one output of a graph job
    train_loss: float = Field(description="this output's mean training loss over the epoch (unweighted)")
    val_loss: float = Field(description="its validation loss (unweighted)")
    val_accuracy: float | None = Field(
        description="its share of correct validation predictions (classification)"
    )


OUTPUTS_DESCRIPTION = (
    "a graph job's metrics per trained output; the total losses are the sum of each output's loss "
    "times its weight, the total accuracy the mean over the classification outputs (null for a sequence job)"
)


class EpochResult(Report):  # one line of a job's history
    epoch: int
    step: int = Field(description="optimizer steps so far")
    train_loss: float = Field(description="mean training loss over the epoch")
    val_loss: float
    val_accuracy: float | None = Field(description="share of correct validation predictions (classification)")
    outputs: dict[str, OutputMetrics] | None = Field(None, description=OUTPUTS_DESCRIPTION)


class Metrics(Report):
    train_loss: float
    val_loss: float
    val_accuracy: float | None
    outputs: dict[str, OutputMetrics] | None = Field(None, description=OUTPUTS_DESCRIPTION)


class JobMemory(Report):
    estimated_bytes: int | None = Field(description="the plan's estimate: training step peak plus data")
    measured_peak_bytes: int = Field(description="what the run really used (see `how`)")
    how: str = Field(description="how it was measured on that device")


class Job(Report):
    """A job as the store keeps it (``request`` is None when it was not read)."""

    id: str
    status: JobStatus
    owner: str | None = None  # sha256 hex of the creating API key, never the key
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    request: dict[str, Any] | None = None
    time_limit_s: float | None = None  # the job's own limit; None: the server's
    memory_estimate_bytes: int
    device: str | None = None
    node: NodeInfo | None = None
    history: list[EpochResult] = []
    metrics: Metrics | None = None
    progress: Progress | None = None
    duration_s: float | None = None
    error: str | None = None
    restarts: int = 0
    memory: JobMemory | None = None
