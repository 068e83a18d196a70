"""Ray actors for tests, in a module Ray's workers import by its name (``tests.actors``: pytest
imports a test module by its file's name alone, which a worker could not import)."""

from __future__ import annotations

from app.jobs.domain import Metrics
from app.jobs.events import Done
from app.jobs.worker import Handoff


class WeightsHolder:
    """A job's actor at the end of a successful run: a real ``Handoff`` holding these weights'
    bytes, served as ``app.jobs.worker.JobActor`` serves them."""

    def __init__(self, weights: bytes) -> None:
        self.handoff = Handoff()
        metrics = Metrics(train_loss=0.1, val_loss=0.2, val_accuracy=None)
        self.handoff.publish(Done(metrics=metrics, duration_s=1.0, weights=weights))

    def result(self, claimant: str, wait_s: float) -> dict | None:
        return self.handoff.result(claimant, wait_s)

    def chunk(self, claimant: str, index: int) -> bytes | None:
        return self.handoff.chunk(claimant, index)
