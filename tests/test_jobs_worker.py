"""What a job's actor writes to the store for each event, on a real SQLite store (no Ray): a
restarted worker counts once, re-reported epochs are kept once, a finished job stays finished,
and a successful run leaves its job running (the API finishes it once it has the weights)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.jobs.events import EpochEntry, EpochEvent, Failed, Progress, Started
from app.jobs.store import JobStore
from app.jobs.worker import record

NODE = {"node_id": "n", "ip": "127.0.0.1", "hostname": "h", "pid": 1}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path)
    store.create("j", {}, 1)
    yield store
    store.close()


def epoch(n: int) -> EpochEvent:
    entry = EpochEntry(epoch=n, step=10 * n, train_loss=1 / n, val_loss=1 / n, val_accuracy=None)
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
    assert job["status"] == "running" and job["restarts"] == 1 and job["node"] == moved
    assert [h["epoch"] for h in job["history"]] == [1, 2, 3]
    assert [kind for _, kind, _ in store.events_after("j", 0)] == ["epoch"] * 3


def test_a_worker_that_died_before_reporting_its_start_is_counted_on_restart(store: JobStore) -> None:
    assert record(store, "j", Started(device="cpu", node=NODE), restarted=True)
    job = store.get("j")
    assert job["status"] == "running" and job["restarts"] == 1


def test_a_restart_of_a_finished_job_ends_without_counting(store: JobStore) -> None:
    assert store.finish("j", "cancelled", "cancelled by request")
    assert not record(store, "j", Started(device="cpu", node=NODE), restarted=False)
    assert not record(store, "j", Started(device="cpu", node=NODE, resumed_from_epoch=2), restarted=True)
    job = store.get("j")
    assert job["status"] == "cancelled" and job["restarts"] == 0


def test_a_failure_finishes_the_job_with_its_reason(store: JobStore) -> None:
    record(store, "j", Started(device="cpu", node=NODE), restarted=False)
    assert not record(store, "j", Failed(error="the loss diverged"), restarted=False)
    assert store.get("j")["error"] == "the loss diverged"
