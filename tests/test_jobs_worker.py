"""What a job's actor writes to the store for each event, on a real SQLite store (no Ray): a
restarted worker counts once, re-reported epochs are kept once, a finished job stays finished,
and a successful run leaves its job running (the API finishes it once it has the weights)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.jobs import worker
from app.jobs.domain import EpochResult, JobStatus, Progress
from app.jobs.events import Done, EpochEvent, Failed, Started
from app.jobs.store import JobStore
from app.jobs.worker import Handoff, record

NODE = {"node_id": "n", "ip": "127.0.0.1", "hostname": "h", "pid": 1}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path)
    store.create("j", {}, 1)
    yield store
    store.close()


def epoch(n: int) -> EpochEvent:
    entry = EpochResult(epoch=n, step=10 * n, train_loss=1 / n, val_loss=1 / n, val_accuracy=None)
    return EpochEvent(entry=entry, progress=Progress(epoch=n, step=10 * n, steps_total=30, loss=1 / n))


def test_a_run_then_a_restart_that_reports_its_checkpoint_again(store: JobStore) -> None:
    assert record(store, "j", Started(device="cpu", node=NODE), restarted=False)
    assert record(store, "j", epoch(1), restarted=False)
    # The worker dies mid-epoch 2; Ray restarts it on another process, which resumes from epoch 1.
    moved = {**NODE, "pid": 2}
    assert record(store, "j", Started(device="cpu", node=moved, resumed_from_epoch=1), restarted=True)
    for n in (1, 2, 3):
        assert record(store, "j", epoch(n), restarted=True)
    job = store.get("j")
    assert job.status == JobStatus.RUNNING and job.restarts == 1 and job.node.model_dump() == moved
    assert [h.epoch for h in job.history] == [1, 2, 3]
    assert [kind for _, kind, _ in store.events_after("j", 0)] == ["epoch"] * 3


def test_a_worker_that_died_before_reporting_its_start_is_counted_on_restart(store: JobStore) -> None:
    assert record(store, "j", Started(device="cpu", node=NODE), restarted=True)
    job = store.get("j")
    assert job.status == JobStatus.RUNNING and job.restarts == 1


def test_a_restart_of_a_finished_job_ends_without_counting(store: JobStore) -> None:
    assert store.finish("j", JobStatus.CANCELLED, "cancelled by request")
    assert not record(store, "j", Started(device="cpu", node=NODE), restarted=False)
    assert not record(store, "j", Started(device="cpu", node=NODE, resumed_from_epoch=2), restarted=True)
    job = store.get("j")
    assert job.status == JobStatus.CANCELLED and job.restarts == 0


def test_a_failure_finishes_the_job_with_its_reason(store: JobStore) -> None:
    record(store, "j", Started(device="cpu", node=NODE), restarted=False)
    assert not record(store, "j", Failed(error="the loss diverged"), restarted=False)
    assert store.get("j").error == "the loss diverged"


def test_the_handoff_gives_the_result_to_one_api_process_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "CHUNK_BYTES", 7)
    monkeypatch.setattr(worker, "CLAIM_S", 0.2)
    handoff = Handoff()
    assert handoff.result("api-a", 0) is None  # still training
    weights = bytes(range(20))
    metrics = {"train_loss": 0.1, "val_loss": 0.2, "val_accuracy": 0.9, "outputs": None}
    threading.Timer(0.05, handoff.publish, [Done(metrics=metrics, duration_s=1.5, weights=weights)]).start()
    result = handoff.result("api-a", 5)  # waits for the run's end; asking claims nothing
    assert result == {
        "metrics": metrics,
        "duration_s": 1.5,
        "memory": None,
        "size_bytes": 20,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "chunks": 3,
    }
    # Nobody fetches yet: an API killed while its call waited would hold nothing from the next one.
    assert handoff.result("api-b", 0) == result
    first = handoff.chunk("api-a", 0)  # api-a fetches: the weights are its own now
    assert handoff.result("api-b", 0) is None and handoff.chunk("api-b", 0) is None
    rest = [handoff.chunk("api-a", i) for i in range(1, result["chunks"])]
    assert b"".join([first, *rest]) == weights
    assert handoff.result("api-a", 0) == result
    time.sleep(0.25)  # api-a died mid-fetch: its claim lapses
    assert handoff.result("api-b", 0) == result
    assert handoff.chunk("api-b", 0) == weights[:7]
    assert handoff.result("api-a", 0) is None and handoff.chunk("api-a", 1) is None
