"""Writes that fail: on real disks (tests/disks.py), a full disk under the job store and the
jobs' files, and read-only directories (issue 21 item 14, and the same defect beside it); and on
PostgreSQL, a commit whose answer is lost with its connection.

A job whose disk fills up fails with that reason, never "the job's worker is gone": its worker
hands the reason to the API through Ray when the store will not take it, and the API shows it at
once and records it once the store takes writes again. ``/readyz`` says the store takes no writes
while it does not. A checkpoint that cannot be written leaves nothing behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient

from app.core.config import settings
from app.examples import DIGITS_MLP, digits_job
from app.jobs import checkpoint, ray_runtime
from app.jobs import store as store_module
from app.jobs.collect import Collector
from app.jobs.domain import JobStatus
from app.jobs.events import Failed
from app.jobs.retention import job_dir, prune
from app.jobs.store import JobStore, StoreNotWritable, events, jobs
from app.jobs.train import node_info, train
from app.jobs.worker import Handoff, run
from app.main import app
from tests.actors import WeightsHolder
from tests.databases import LostCommit, postgres_schema
from tests.disks import full, read_only, small_disk
from tests.test_store_api import JOB_ROUTES
from tests.test_training import payload

DISK_FULL = ("database or disk is full", "No space left on device")  # SQLite's words, the kernel's
MNIST_LIKE = {"name": "digits"}
CROSS_ENTROPY = {"type": "CrossEntropyLoss"}


@pytest.fixture(autouse=True)
def probe_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness asks the database on every call (not at most once a second), so a test need not wait."""
    monkeypatch.setattr(store_module, "PROBE_EVERY_S", 0.0)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "32m") as mounted:
        yield mounted


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], TestClient]:
    """The app with its lifespan on data directory ``path``, store calls retried for 0.3 s."""

    def serve(path: Path) -> TestClient:
        monkeypatch.setattr(settings, "data_dir", path)
        monkeypatch.setattr(settings, "db_retry_seconds", 0.3)
        monkeypatch.setattr(settings, "ray_eager_start", False)
        return TestClient(app)

    return serve


def finished_job(store: JobStore, job_id: str = "0123abcd") -> str:
    store.create(job_id, {"epochs": 1}, 1)
    store.finish(job_id, JobStatus.FAILED, "boom")
    return job_id


# The store on a full disk, and on a read-only server.


def test_a_full_disk_refuses_writes_reads_go_on_and_the_probe_says_so(disk: Path) -> None:
    store = JobStore(disk, retry_seconds=0.3)
    try:
        store.create("a", {}, 1)
        store.check_writable()
        with full(disk):
            with pytest.raises(StoreNotWritable, match="takes no writes: database or disk is full"):
                store.check_writable()
            with pytest.raises(StoreNotWritable, match="database or disk is full") as refused:
                store.create("b", {}, 1)
            assert refused.value.database == f"SQLite {disk / 'jobs.sqlite3'}"
            store.ping()
            assert store.get("a").status == JobStatus.QUEUED
        store.check_writable()  # the space is back
        store.create("b", {}, 1)
        with store._read() as conn:  # the probe's row never stays
            assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 0
    finally:
        store.close()


def test_a_read_only_postgres_is_a_store_that_takes_no_writes() -> None:
    """What a hot standby (or a server out of disk) answers: reads go on, writes are refused."""
    with postgres_schema() as url:
        JobStore(Path("."), url).create("a", {}, 1)  # migrated, one job
        read_only_url = sa.make_url(url)
        options = f"{read_only_url.query['options']} -cdefault_transaction_read_only=on"
        store = JobStore(Path("."), read_only_url.update_query_dict({"options": options}), retry_seconds=0.3)
        try:
            store.ping()
            assert store.get("a").status == JobStatus.QUEUED
            with pytest.raises(StoreNotWritable, match="read-only transaction"):
                store.check_writable()
            with pytest.raises(StoreNotWritable, match="read-only transaction"):
                store.finish("a", JobStatus.CANCELLED)
        finally:
            store.close()


@pytest.fixture
def lost_commit() -> Iterator[tuple[LostCommit, JobStore]]:
    """A store on PostgreSQL behind a proxy that can lose a commit's answer."""
    with postgres_schema() as url:
        proxy = LostCommit(url)
        store = JobStore(Path("."), proxy.url.render_as_string(hide_password=False), retry_seconds=10)
        try:
            yield proxy, store
        finally:
            store.close()
            proxy.close()


def test_writes_whose_commit_answer_is_lost_are_made_once_and_reported_made(
    lost_commit: tuple[LostCommit, JobStore],
) -> None:
    """The store retries a write whose connection died; when the commit had landed, the retry must
    neither make it twice nor call it refused."""
    proxy, store = lost_commit

    def cut(write: Callable[[], object]) -> object:
        proxy.armed.set()
        result = write()
        assert proxy.cut.is_set()
        proxy.cut.clear()
        return result

    store.create("a", {}, 1)
    assert cut(lambda: store.create("b", {}, 1)) is None  # not an IntegrityError (a 500 on the route)
    assert store.list(0, 10)[1] == 2
    assert cut(lambda: store.mark_running("a", "cpu", node_info())) is True  # else the worker ends itself
    moved = node_info().model_copy(update={"pid": 1})
    assert cut(lambda: store.add_restart("a", moved)) == 1
    assert cut(lambda: store.finish("a", JobStatus.CANCELLED, "cancelled by request")) is True  # 202, not 409
    job = store.get("a")
    assert (job.status, job.restarts, job.node) == (JobStatus.CANCELLED, 1, moved)
    # What is really refused still is.
    assert store.finish("a", JobStatus.FAILED, "too late") is False
    assert store.mark_running("a", "cpu", node_info()) is False
    with pytest.raises(sa.exc.IntegrityError):
        store.create("b", {}, 1)


# The API: readiness, and 503s rather than 500s.


def test_readyz_is_503_naming_the_store_while_its_disk_is_full(serve, disk: Path) -> None:
    with serve(disk) as api:
        job_id = finished_job(app.state.jobs.store)
        assert api.get("/readyz").json()["store"] == "up"
        with full(disk):
            ready = api.get("/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["status"] == "not ready" and body["store"] == "not writable"
            assert body["database"] == f"SQLite {disk / 'jobs.sqlite3'}"
            assert body["reason"] == "database or disk is full"
            refused = api.delete(f"/v1/jobs/{job_id}")
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            [detail] = refused.json()["detail"]
            assert detail["type"] == "store_unavailable" and "takes no writes" in detail["msg"]
            assert api.get(f"/v1/jobs/{job_id}").status_code == 200  # reads go on
        assert api.get("/readyz").status_code == 200
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 204


def test_a_read_only_data_directory_is_a_503_naming_it_not_a_500(serve, tmp_path: Path) -> None:
    data = tmp_path / "data"
    finished_job(JobStore(data))
    with read_only(data), serve(data) as api:
        for method, path in JOB_ROUTES:
            response = api.request(method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert "Read-only file system" in response.json()["detail"][0]["msg"]
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["store"] == "down"
        assert "Read-only file system" in ready.json()["reason"]


def test_deleting_a_job_whose_files_are_read_only_is_a_503_and_keeps_the_job(serve, tmp_path: Path) -> None:
    with serve(tmp_path) as api:
        job_id = finished_job(app.state.jobs.store)
        files = job_dir(job_id)
        files.mkdir(parents=True)
        (files / "model.safetensors").write_bytes(b"weights")
        with read_only(files):
            refused = api.delete(f"/v1/jobs/{job_id}")
            assert refused.status_code == 503, refused.text
            [detail] = refused.json()["detail"]
            assert "Read-only file system" in detail["msg"] and detail["ctx"]["database"].startswith(
                "MB_DATA_DIR"
            )
            assert api.get(f"/v1/jobs/{job_id}").status_code == 200
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert not files.exists()


def test_retention_deletes_the_jobs_it_can_and_keeps_one_whose_files_are_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "data_dir", tmp_path)
    store = JobStore(tmp_path)
    try:
        for age_days, job_id in ((3, "stuck"), (2, "old")):
            finished_job(store, job_id)
            with store._engine.begin() as conn:
                when = time.time() - age_days * 86400
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(finished_at=when))
            job_dir(job_id).mkdir(parents=True)
            (job_dir(job_id) / "model.safetensors").write_bytes(b"weights")
        with read_only(job_dir("stuck")):
            assert prune(store, retention_days=1) == ["old"]
        assert store.get("stuck") is not None
        assert prune(store, retention_days=1) == ["stuck"]
    finally:
        store.close()


# Checkpoints.


def test_a_checkpoint_that_hits_a_full_disk_fails_the_run_saying_so_and_leaves_nothing(disk: Path) -> None:
    job = payload(DIGITS_MLP, MNIST_LIKE, CROSS_ENTROPY, epochs=1, artifact_dir=str(disk / "job"))
    assert list(train(job))[-1].kind == "done"  # epoch 1 is checkpointed
    directory = disk / "job" / "checkpoint"
    resumed = train({**job, "epochs": 3})
    assert next(resumed).resumed_from_epoch == 1
    with full(disk):
        failed = list(resumed)[-1]  # epoch 2 is trained, then its checkpoint hits the full disk
    assert failed.kind == "failed"
    assert "could not write the checkpoint of epoch 2" in failed.error and DISK_FULL[1] in failed.error
    assert sorted(path.name for path in directory.iterdir()) == ["LATEST", "epoch-00001"]
    assert checkpoint.load(directory).epoch == 1  # the previous one, intact


def test_a_read_only_checkpoint_directory_fails_the_run_saying_so(tmp_path: Path) -> None:
    artifacts = tmp_path / "job"
    artifacts.mkdir()
    with read_only(artifacts):
        failed = list(train(payload(DIGITS_MLP, MNIST_LIKE, CROSS_ENTROPY, artifact_dir=str(artifacts))))[-1]
    assert failed.kind == "failed"
    assert (
        "could not write the checkpoint of epoch 1" in failed.error
        and "Read-only file system" in failed.error
    )
    assert list(artifacts.iterdir()) == []


def test_the_next_checkpoint_removes_what_a_killed_attempt_left(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoint"
    killed = directory / ".epoch-00002.tmp-99999"  # another process's pid: it died mid-write
    killed.mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"half a file")
    (directory / ".LATEST.tmp-99999").write_text("epoch-00002")
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rng = {"torch": torch.get_rng_state()}
    checkpoint.save(directory, model, optimizer, rng, epoch=2, step=4, history=[], elapsed_s=1.0)
    assert sorted(path.name for path in directory.iterdir()) == ["LATEST", "epoch-00002"]


# The worker, in-process: what it hands to the API when the store refuses its writes.


def test_a_worker_whose_store_refuses_its_writes_hands_the_reason_over(disk: Path) -> None:
    """The disk fills after the job was queued: the worker's first write is refused. Its run
    returns the reason instead of raising (its actor holds it for the API)."""
    job = payload(DIGITS_MLP, MNIST_LIKE, CROSS_ENTROPY, epochs=1)
    api_store, worker_store = JobStore(disk), JobStore(disk, retry_seconds=0.3, migrate=False)
    try:
        api_store.create("j", {}, 1)
        with full(disk):
            outcome = run(worker_store, "j", job, node_info(), restarted=False)
            assert api_store.get("j").status == JobStatus.QUEUED
    finally:
        api_store.close()
        worker_store.close()
    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("the worker could not record the job: StoreNotWritable")
    assert DISK_FULL[0] in outcome.error


def test_the_handoff_gives_a_failure_to_any_api_process() -> None:
    handoff = Handoff()
    handoff.publish(Failed(error="training failed: disk full"))
    assert handoff.result("api-a", 0) == {"error": "training failed: disk full"}
    assert handoff.result("api-b", 0) == {"error": "training failed: disk full"}  # no claim to wait out


# Through Ray: a real job, a real collection.


@pytest.fixture
def ray_elsewhere(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process joined to a Ray whose own files are not on the disk under test (it outlives it)."""
    monkeypatch.setattr(settings, "data_dir", tmp_path_factory.mktemp("ray-home"))
    ray_runtime.ensure_ray()


def wait_for(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.2)
    return result


def test_a_job_whose_checkpoint_hits_a_full_disk_fails_with_that_reason_through_ray(
    serve, disk: Path, ray_elsewhere: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 item 14: the disk fills while a job trains; its checkpoint gets ENOSPC, and the
    store refuses the failure too. The API shows it at once (not "running"), readiness says the
    store takes no writes, and once the space is back the job is failed with that reason (not
    "the job's worker is gone") and its worker ends."""
    monkeypatch.setattr(settings, "worker_db_retry_seconds", 2)
    monkeypatch.setattr(settings, "progress_every_steps", 10**9)  # the checkpoint is the next write
    dataset = {"name": "synthetic", "shape": [16], "samples": 8_000}
    model = {"layers": [{"type": "Linear", "out_features": 10}]}
    body = {**digits_job(model, epochs=2, batch_size=1, device="cpu"), "dataset": dataset}
    with serve(disk) as api:
        store = app.state.jobs.store
        job_id = api.post("/v1/jobs", json=body).json()["id"]
        name = ray_runtime.actor_name(job_id)
        try:
            current = wait_for("the job started", lambda: started(api.get(f"/v1/jobs/{job_id}").json()), 120)
            assert current["status"] == "running", current
            with full(disk):
                shown = wait_for("the job failed", lambda: failed(api.get(f"/v1/jobs/{job_id}").json()), 60)
                assert "could not write the checkpoint of epoch 1" in shown["error"], shown["error"]
                assert DISK_FULL[1] in shown["error"]
                assert store.get(job_id).status == JobStatus.RUNNING  # not stored yet: Ray told the API
                ready = api.get("/readyz")
                assert ready.status_code == 503 and ready.json()["store"] == "not writable"
                assert ray_runtime.actor_state(name) == "ALIVE"  # the worker holds the reason meanwhile
            stored = wait_for("the failure stored", lambda: failed(store.get(job_id).model_dump()), 30)
            assert stored["error"] == shown["error"]
            wait_for("the worker ended", lambda: ray_runtime.actor_state(name) is None, 30)
            assert api.get("/readyz").status_code == 200
        finally:
            ray_runtime.kill_actor(name)


def failed(job: dict) -> dict | None:
    return job if job["status"] == "failed" else None


def started(job: dict) -> dict | None:
    return job if job["status"] != "queued" else None


def test_weights_whose_sidecar_does_not_fit_on_the_disk_leave_no_file(
    tmp_path: Path, ray_elsewhere: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights fit, their sidecar no longer does: the job fails saying so, and the weights'
    file is not left behind (taking space, with no sidecar to say it is there)."""
    monkeypatch.setattr(settings, "data_dir", tmp_path)
    store, job_id = JobStore(tmp_path), "0123abcd"
    store.create(job_id, {}, 1)
    store.mark_running(job_id, "cpu", node_info())
    weights = os.urandom(3 * 4096 + 100)  # four pages of the disk
    name = ray_runtime.actor_name(job_id)
    ray_runtime.start_actor(WeightsHolder, name, (weights,), num_gpus=0, max_restarts=0)
    try:
        with small_disk(tmp_path / "jobs", "1m") as jobs_disk:
            job_dir(job_id).mkdir()
            with full(jobs_disk) as filler:
                os.truncate(filler, filler.stat().st_size - 4 * 4096)  # room for the weights alone
                assert wait_for("the collection", lambda: Collector(store).poll(job_id), 60)
            assert list(job_dir(job_id).iterdir()) == []
        job = store.get(job_id)
        assert job.status == JobStatus.FAILED and "could not be stored" in job.error
        assert DISK_FULL[1] in job.error
    finally:
        ray_runtime.kill_actor(name)
        store.close()
