"""What a training worker reports, as typed messages (a discriminated union on ``kind``).

The loop (``app.jobs.train``) yields them; the job's actor (``app.jobs.worker``) writes them to
the store. Events, in order: ``started`` (device, node; on a resumed run the epochs the
checkpoint holds, whose ``epoch`` events are then sent again: the store keeps each epoch once),
``progress`` every N steps, ``epoch`` after each epoch's validation,
then ``done`` (final metrics and the trained weights' bytes) or ``failed`` (a clear reason).
Their contents are the job domain's models (``app.jobs.domain``), which the API shows as they are.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.domain import EpochResult, JobMemory, Metrics, NodeInfo, Progress


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Started(Event):
    kind: Literal["started"] = "started"
    device: str
    node: NodeInfo
    resumed_from_epoch: int = Field(0, description="epochs restored from a checkpoint (0: a fresh run)")


class ProgressEvent(Event):
    kind: Literal["progress"] = "progress"
    progress: Progress


class EpochEvent(Event):
    kind: Literal["epoch"] = "epoch"
    entry: EpochResult
    progress: Progress


class Done(Event):
    kind: Literal["done"] = "done"
    metrics: Metrics
    duration_s: float
    memory: JobMemory | None = None  # measured memory (app.jobs.measure)
    weights: bytes = Field(b"", repr=False)  # a safetensors file (app.jobs.weights.serialize_weights)


class Failed(Event):
    kind: Literal["failed"] = "failed"
    error: str


WorkerEvent = Annotated[Started | ProgressEvent | EpochEvent | Done | Failed, Field(discriminator="kind")]
