"""The reaper's verdicts and its act-once update, and a job whose actor Ray refuses to start:
in-process on a real SQLite store, without Ray (the end-to-end runs are tests/test_jobs_restart.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import settings
from app.examples import DIGITS_MLP, digits_job
from app.jobs import engine as engine_module
from app.jobs import ray_runtime
from app.jobs.domain import Job, JobStatus
from app.jobs.engine import KILL_GRACE_S, START_GRACE_S, BackendDown, JobEngine, verdict
from app.jobs.plan import plan_job
from app.jobs.retention import job_dir
from app.jobs.store import JobStore
from app.jobs.train import TrainPayload, node_info
from app.main import app
from app.schemas.jobs import JobCreate

NOW = 1_800_000_000.0
BODY = digits_job(DIGITS_MLP, epochs=1, device="cpu")


def row(
    status: str = "running", age_s: float = 60, ran_s: float | None = 50, time_limit_s: float | None = None
) -> Job:
    started = None if ran_s is None else NOW - ran_s
    return Job(
        id="j",
        status=status,
        created_at=NOW - age_s,
        started_at=started,
        time_limit_s=time_limit_s,
        memory_estimate_bytes=1,
    )


def test_an_active_job_within_its_limits_is_left_alone() -> None:
    assert verdict(row(), "ALIVE", None, NOW) is None
    assert verdict(row("queued", ran_s=None), "PENDING_CREATION", NOW - 60, NOW) is None


def test_a_job_past_its_time_limit_and_grace_is_failed() -> None:
    limit = 30
    assert verdict(row(ran_s=limit + KILL_GRACE_S - 1, time_limit_s=limit), "ALIVE", None, NOW) is None
    reason = verdict(row(ran_s=limit + KILL_GRACE_S + 1, time_limit_s=limit), "ALIVE", None, NOW)
    assert reason == "timed out: the job ran past its 30 s limit and was killed"
    # Without a limit of its own, the server's; whatever the actor's state (even unknown).
    old = row(ran_s=settings.max_job_seconds + KILL_GRACE_S + 1)
    assert verdict(old, None, None, NOW).startswith("timed out")


def test_a_job_without_an_actor_is_failed_once_its_start_grace_is_past() -> None:
    assert verdict(row("queued", age_s=START_GRACE_S - 1, ran_s=None), None, None, NOW) is None
    reason = verdict(row("queued", age_s=START_GRACE_S + 1, ran_s=None), None, None, NOW)
    assert reason is not None and "worker is gone" in reason and "died" in reason
    assert "worker is gone" in verdict(row(), None, None, NOW)


def test_waiting_for_a_worker_is_bounded_by_max_queue_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_queue_seconds", 20)
    queued = row("queued", age_s=21, ran_s=None)
    assert "no worker took the job within MB_MAX_QUEUE_SECONDS (20 s)" in verdict(
        queued, "PENDING_CREATION", NOW - 21, NOW
    )
    # A running job whose worker died and waits for a node with room to restart it.
    assert verdict(row(), "RESTARTING", NOW - 19, NOW) is None
    assert "not restarted within MB_MAX_QUEUE_SECONDS" in verdict(row(), "RESTARTING", NOW - 21, NOW)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[JobStore, JobStore]]:
    """Two connections to one store, as two API processes have."""
    first, second = JobStore(tmp_path), JobStore(tmp_path)
    yield first, second
    first.close()
    second.close()


def test_of_several_reapers_one_acts(
    stores: tuple[JobStore, JobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "max_queue_seconds", 10)
    monkeypatch.setattr(ray_runtime, "started", lambda: False)  # Ray is unknown: time limits still apply
    first, second = stores
    first.create("late", BODY, 1)
    first.create("fresh", BODY, 1)
    later = time.time() + 11
    assert JobEngine(first).reap(later) == ["late", "fresh"]
    assert JobEngine(second).reap(later) == []
    job = second.get("late")
    assert job.status == JobStatus.FAILED and "MB_MAX_QUEUE_SECONDS" in job.error
    assert JobEngine(second).reap(time.time()) == []  # nothing active is left


def test_a_jobs_own_time_limit_is_kept_in_its_row_for_the_reaper(
    stores: tuple[JobStore, JobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine stores the job's own limit beside its request and sends the worker the payload
    the plan built; the reaper reads the limit from its column (it reads no request)."""
    store, _ = stores
    started = []
    monkeypatch.setattr(JobEngine, "check_device", lambda self, device: 0)
    monkeypatch.setattr(ray_runtime, "start_actor", lambda *args, **options: started.append((args, options)))
    monkeypatch.setattr(ray_runtime, "find_actor", lambda name: None)  # no actor to collect from
    monkeypatch.setattr(ray_runtime, "started", lambda: False)
    job = JobCreate.model_validate({**BODY, "time_limit_s": 5})
    plan = plan_job(job)
    queued = JobEngine(store).submit(job, plan)
    (_, _, (job_id, payload, *_)), options = started[0]
    assert job_id == queued.id and queued.time_limit_s == 5 and queued.request["time_limit_s"] == 5
    sent = TrainPayload.model_validate(payload)  # as the worker reads it
    assert (sent.job_id, sent.time_limit_s, sent.artifact_dir) == (job_id, 5, str(job_dir(job_id)))
    assert options["memory"] == payload["memory_allowance_bytes"] == plan.payload.memory_allowance_bytes
    store.mark_running(job_id, "cpu", node_info())
    assert JobEngine(store).reap(time.time() + 5 + KILL_GRACE_S - 1) == []
    assert JobEngine(store).reap(time.time() + 5 + KILL_GRACE_S + 1) == [job_id]
    assert store.get(job_id).error == "timed out: the job ran past its 5 s limit and was killed"


def test_a_job_ray_refuses_to_start_leaves_no_row_and_no_slot(
    stores: tuple[JobStore, JobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = stores

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the GCS went away")

    monkeypatch.setattr(JobEngine, "check_device", lambda self, device: 0)
    monkeypatch.setattr(ray_runtime, "start_actor", refuse)
    job = JobCreate.model_validate(BODY)
    with pytest.raises(BackendDown, match="GCS went away"):
        JobEngine(store).submit(job, plan_job(job))
    assert store.count_active() == 0
    assert store.list(0, 10) == ([], 0)


def test_the_route_answers_503_with_retry_after_when_ray_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the GCS went away")

    monkeypatch.setattr(settings, "data_dir", tmp_path)
    monkeypatch.setattr(settings, "ray_eager_start", False)
    monkeypatch.setattr(engine_module.JobEngine, "check_device", lambda self, device: 0)
    monkeypatch.setattr(ray_runtime, "start_actor", refuse)
    with TestClient(app) as client:
        response = client.post("/v1/jobs", json=BODY)
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        assert "GCS went away" in response.json()["detail"]
        assert client.get("/v1/jobs").json()["count"] == 0
