"""Schemas of the training-job endpoints: ``JobCreate`` in, ``JobPublic`` / ``JobsPublic`` out.

The parts of a job shown as they are stored (status, node, history, progress, metrics, memory)
are the job domain's models (``app.jobs.domain``), shared with the worker that reports them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.core.config import settings
from app.datasets.uploaded import UploadedDataset
from app.jobs.domain import EpochResult, Job, JobMemory, JobStatus, Metrics, NodeInfo, Progress
from app.jobs.retention import job_dir
from app.jobs.weights import weights_info
from layers import AnyModel, GraphSpec
from layers.language.errors import SpecError
from layers.language.io import output_names
from layers.language.spec import SpecModel
from layers.training.datasets import bounded_datasets
from layers.training.losses import AnyLoss, AnyLossTerm, LossSpec, as_term
from layers.training.optimizers import AnyOptimizer

JobDataset = bounded_datasets(settings, extra=(UploadedDataset,))  # every kind, within this server's limits


class JobCreate(SpecModel):
    """A short training run: a model, the data, the loss (a graph's: losses) and the optimizer."""

    model: AnyModel
    dataset: JobDataset
    loss: AnyLoss | None = Field(None, description="the loss: of a sequence model, or of a one-output graph")
    losses: dict[str, AnyLossTerm] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description='a graph\'s losses by output name, each with its "weight" (default 1) in the total; '
        "outputs without one are not trained on",
    )
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

    @property
    def graph(self) -> bool:
        return isinstance(self.model, GraphSpec)

    def terms(self) -> dict[str, LossSpec]:
        """The weighted loss of each trained output, by output name; ``SpecError`` at ``loss`` or
        ``losses`` when they do not fit the model."""
        outputs = output_names(self.model)
        if self.losses is not None and not self.graph:
            raise SpecError(("losses",), "`losses` is for graph models; a sequence model takes `loss`")
        if self.losses is not None and self.loss is not None:
            raise SpecError(("loss",), "give `loss` or `losses`, not both")
        if self.losses is not None:
            for name in self.losses:
                if name not in outputs:
                    raise SpecError(
                        ("losses", name),
                        f"the model has no output {name!r}; its outputs are {list(outputs)}",
                        {"got": name, "expected": list(outputs)},
                    )
            return dict(self.losses)
        if self.loss is None:
            what = "`loss`" if not self.graph else "`losses` ({output_name: {loss spec, weight}})"
            raise SpecError(("loss",), f"a job needs {what}")
        if len(outputs) > 1:
            raise SpecError(
                ("loss",),
                f"this graph has {len(outputs)} outputs {list(outputs)}: give `losses` by output name "
                "instead of one `loss`",
                {"outputs": list(outputs)},
            )
        return {outputs[0]: as_term(self.loss)}

    def loss_of_sequence(self) -> LossSpec:
        """A sequence job's one loss."""
        (term,) = self.terms().values()
        return term


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

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        """The job as the API shows it, with its weights when it has them."""
        return cls.model_validate({**dict(job), "weights": _weights(job)})


def _weights(job: Job) -> WeightsPublic | None:
    # Read from the job's artifact directory (app/jobs/weights.py), not from a store column.
    info = weights_info(job_dir(job.id)) if job.status == JobStatus.SUCCEEDED else None
    if info is None:
        return None
    url = f"/v1/jobs/{job.id}/weights"
    return WeightsPublic(size_bytes=info["size_bytes"], sha256=info["sha256"], url=url)


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="all stored jobs")
