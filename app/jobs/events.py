"""What a training worker reports, as typed messages (a discriminated union on ``kind``).

The loop (``app.jobs.train``) yields them; the job's actor (``app.jobs.worker``) writes them to
the store. Events, in order: ``started`` (device, node; on a resumed run the epochs the
checkpoint holds, whose ``epoch`` events are then sent again: the store keeps each epoch once),
``progress`` every N steps, ``epoch`` after each epoch's validation,
then ``done`` (final metrics and the trained weights' bytes) or ``failed`` (a clear reason).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int
    step: int
    steps_total: int
    loss: float


class EpochEntry(BaseModel):
    """One line of a job's history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None


class Started(Event):
    kind: Literal["started"] = "started"
    device: str
    node: dict[str, Any]
    resumed_from_epoch: int = Field(0, description="epochs restored from a checkpoint (0: a fresh run)")


class ProgressEvent(Event):
    kind: Literal["progress"] = "progress"
    progress: Progress


class EpochEvent(Event):
    kind: Literal["epoch"] = "epoch"
    entry: EpochEntry
    progress: Progress


class Done(Event):
    kind: Literal["done"] = "done"
    metrics: dict[str, float | None]
    duration_s: float
    memory: dict[str, Any] | None = None  # measured memory (app.jobs.measure)
    weights: bytes = Field(b"", repr=False)  # a safetensors file (app.jobs.weights.serialize_weights)


class Failed(Event):
    kind: Literal["failed"] = "failed"
    error: str


WorkerEvent = Annotated[Started | ProgressEvent | EpochEvent | Done | Failed, Field(discriminator="kind")]
WORKER_EVENT: TypeAdapter[WorkerEvent] = TypeAdapter(WorkerEvent)
