"""Warm job actors (app/jobs/warm_pool.py) on a real embedded Ray, with the app in process.

- ``/readyz`` says Ray is ``starting`` until a warm job actor is up; a job posted then is taken
  by one, which keeps the job's payload in its directory for a restart (the restart itself:
  tests/test_jobs_restart.py, whose jobs are all taken by warm actors).
- A job that no warm actor fits (its memory allowance is larger) gets the room they held.
- An unclaimed warm actor retires when asked, and ends itself once its API stops renewing it;
  a claimed one does neither, and takes no second job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from servers import wait_for

from app.core.config import settings
from app.examples import DIGITS_MLP, digits_job
from app.jobs import ray_runtime
from app.jobs.plan import plan_job
from app.jobs.warm_pool import WarmJobActor, payload_path
from app.main import app
from app.schemas.jobs import JobCreate

JOB = digits_job(DIGITS_MLP, optimizer={"type": "Adam", "lr": 0.01}, epochs=1, batch_size=64, device="cpu")
LONG = {**JOB, "epochs": 100, "batch_size": 8}
TERMINAL = ("succeeded", "failed", "cancelled")


def run(api: TestClient) -> dict:
    """Post ``JOB`` and wait for its end: the job; whether a warm actor took it."""
    response = api.post("/v1/jobs", json=JOB)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def ended() -> dict | None:
        job = api.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in TERMINAL else None

    job = wait_for("the job to end", ended)
    assert job["status"] == "succeeded", job["error"]
    return {**job, "warm": payload_path(str(settings.data_dir.resolve()), job_id).exists()}


def test_readyz_waits_for_a_warm_actor_and_a_job_takes_one(api: TestClient) -> None:
    answers: list[dict] = []

    def up() -> bool:
        answers.append(api.get("/readyz").json())
        return answers[-1]["ray"] == "up"

    wait_for("a warm job actor", up)
    assert answers[0]["ray"] == "starting"  # the lifespan had just begun
    assert all(a["warm_workers"] >= 1 for a in answers if a["ray"] == "up"), answers
    assert run(api)["warm"]


def test_a_job_no_warm_actor_fits_gets_the_room_they_hold(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warm actors come to hold every CPU of this Ray; a job whose memory allowance is larger
    # than theirs starts an actor of its own, which needs one.
    wait_for("the warm actors to hold every CPU", lambda: ray_runtime.room_for(1) == 0)
    monkeypatch.setattr(settings, "job_memory_slack_bytes", 2 * settings.warm_worker_memory_bytes)
    assert not run(api)["warm"]  # before: it waited for room no warm actor gave up (15 min, then failed)
    wait_for("the pool to fill again", lambda: api.get("/readyz").json()["warm_workers"] >= 1)


def start_warm(data_dir: Path, lease_s: float) -> tuple[str, object]:
    job_id = os.urandom(16).hex()
    name = ray_runtime.actor_name(job_id)
    handle = ray_runtime.start_actor(
        WarmJobActor, name, (job_id, str(data_dir), None, 5.0, lease_s), num_gpus=0, max_restarts=0
    )
    return name, handle


def test_an_unclaimed_warm_actor_retires_or_lapses_and_a_claimed_one_stays(api: TestClient) -> None:
    import ray

    app.state.jobs.pool.close()  # its warm actors end: these get the room
    data_dir = settings.data_dir.resolve()
    name, handle = start_warm(data_dir, lease_s=600)
    assert ray.get(handle.renew.remote(), timeout=300) is True  # up, unclaimed
    assert ray.get(handle.retire.remote(), timeout=60) is True
    wait_for("the retired actor to end", lambda: ray_runtime.find_actor(name) is None, 60)

    name, handle = start_warm(data_dir, lease_s=2)
    assert ray.get(handle.renew.remote(), timeout=300) is True
    wait_for("the unrenewed actor to end", lambda: ray_runtime.find_actor(name) is None, 60)

    name, handle = start_warm(data_dir, lease_s=2)
    assert ray.get(handle.renew.remote(), timeout=300) is True
    job_id = name.removeprefix("job-")
    store = app.state.jobs.store
    store.create(job_id, LONG, 1)
    payload = plan_job(JobCreate.model_validate(LONG)).payload.model_copy(update={"job_id": job_id})
    payload = payload.model_dump(mode="json")
    try:
        assert ray.get(handle.claim.remote(payload), timeout=60) is True
        wait_for("the claimed job to run", lambda: store.get(job_id).status == "running")
        time.sleep(3)  # past its lease: a claimed actor has none
        assert ray.get(handle.claim.remote(payload), timeout=60) is False
        assert ray.get(handle.retire.remote(), timeout=60) is False
        assert ray.get(handle.renew.remote(), timeout=60) is False
    finally:
        store.finish(job_id, "cancelled", "cancelled by the test")
        ray_runtime.kill_actor(name)
