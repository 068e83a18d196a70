"""The job store behind the API: the routes and /readyz when the database is down, locked or
corrupt, and a real job through its life on PostgreSQL (tests/test_jobs.py runs on SQLite)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.core.config import settings
from app.examples import DIGITS_MLP, digits_job
from app.jobs import retention
from app.jobs.store import JobStore, jobs
from app.main import app
from tests.databases import drop_connections, postgres_schema, sqlite_write_lock
from tests.test_store import closed_port

TERMINAL = ("succeeded", "failed", "cancelled")
SUMMARY = {"model": {"layers": [{"type": "Linear", "out_features": 3}]}, "input_shape": [2, 4]}
JOB_ROUTES = [
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/0123abcd"),
    ("GET", "/v1/jobs/0123abcd/events"),
    ("POST", "/v1/jobs/0123abcd/cancel"),
    ("DELETE", "/v1/jobs/0123abcd"),
]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], TestClient]:
    """The app with its lifespan on ``url`` (None: SQLite in a fresh data directory), Ray started
    only when a job needs it, and store calls retried for half a second."""

    def serve(url: str | None = None) -> TestClient:
        monkeypatch.setattr(settings, "data_dir", tmp_path)
        monkeypatch.setattr(settings, "database_url", SecretStr(url) if url else None)
        monkeypatch.setattr(settings, "db_retry_seconds", 0.5)
        monkeypatch.setattr(settings, "ray_eager_start", False)
        return TestClient(app)

    return serve


def assert_store_unavailable(response, database: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    [detail] = response.json()["detail"]
    assert detail["type"] == "store_unavailable" and detail["loc"] == ["store"]
    assert detail["ctx"]["database"] == database and database in detail["msg"]


def test_the_api_starts_and_summarises_with_its_database_down(serve) -> None:
    port = closed_port()
    database = f"PostgreSQL 127.0.0.1:{port}/jobs"
    with serve(f"postgresql+psycopg://mb:secret@127.0.0.1:{port}/jobs") as api:
        ready = api.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready" and body["store"] == "down" and body["database"] == database
        assert "secret" not in ready.text
        for method, path in JOB_ROUTES:
            assert_store_unavailable(api.request(method, path), database)
        assert api.post("/v1/models/summary", json=SUMMARY).status_code == 200


def test_a_held_write_lock_gives_503_on_writes_while_reads_go_on(serve, tmp_path: Path) -> None:
    with serve() as api:
        store = app.state.jobs.store
        store.create("0123abcd", {"epochs": 1}, 1)
        store.finish("0123abcd", "failed", "boom")
        with sqlite_write_lock(tmp_path / "jobs.sqlite3", 30) as lock:
            assert api.get("/v1/jobs").json()["count"] == 1
            assert api.get("/v1/jobs/0123abcd").json()["status"] == "failed"
            assert api.get("/readyz").json()["store"] == "up"
            assert lock.poll() is None  # the reads came back while the lock was held: none waited
            response = api.delete("/v1/jobs/0123abcd")
            assert_store_unavailable(response, f"SQLite {tmp_path / 'jobs.sqlite3'}")
            assert "database is locked" in response.json()["detail"][0]["msg"]
        assert api.delete("/v1/jobs/0123abcd").status_code == 204


def test_a_corrupt_sqlite_file_at_start_up_is_moved_aside(
    serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "jobs.sqlite3").write_bytes(b"\x00garbage" * 512)
    with caplog.at_level(logging.ERROR), serve() as api:
        assert api.get("/readyz").json()["store"] == "up"
        assert api.get("/v1/jobs").json() == {"data": [], "count": 0}
    [line] = [r.getMessage() for r in caplog.records if r.name == "app.jobs.store"]
    assert "not a readable SQLite database" in line and "moved it to" in line
    assert len(list(tmp_path.glob("jobs.sqlite3.corrupt-*"))) == 1


def test_a_database_corrupted_while_serving_is_503_then_moved_aside_on_restart(serve, tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with serve() as api:
        store = app.state.jobs.store
        store.create("0123abcd", {"epochs": 1}, 1)
        with sqlite3.connect(path) as db:  # everything into the main file, then overwrite it
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        path.write_bytes(b"\xffoverwritten" * 1024)
        store._engine.dispose()  # the pool's next connections open the file again
        for method, route in JOB_ROUTES:
            assert_store_unavailable(api.request(method, route), f"SQLite {path}")
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["store"] == "down"
        assert ready.json()["reason"] == "file is not a database"
        assert api.post("/v1/models/summary", json=SUMMARY).status_code == 200
    with serve() as api:  # restarted: the file is moved aside, the store starts empty
        assert api.get("/readyz").json()["store"] == "up"
        assert api.get("/v1/jobs").json()["count"] == 0
    assert len(list(tmp_path.glob("jobs.sqlite3.corrupt-*Z"))) == 1  # and its -wal, -shm


def test_the_api_prunes_jobs_past_their_retention(serve, tmp_path: Path, monkeypatch) -> None:
    store = JobStore(tmp_path)
    for job_id in ("old", "new"):
        store.create(job_id, {}, 1)
        store.finish(job_id, "succeeded")
    three_days_ago = time.time() - 3 * 86400
    with store._engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == "old").values(finished_at=three_days_ago))
    store.close()
    monkeypatch.setattr(retention, "FIRST_PRUNE_S", 0)
    monkeypatch.setattr(settings, "job_retention_days", 2)
    with serve() as api:
        deadline = time.monotonic() + 30
        while api.get("/v1/jobs/old").status_code != 404:
            assert time.monotonic() < deadline, "the old job was not pruned"
            time.sleep(0.1)
        assert api.get("/v1/jobs/new").status_code == 200


@pytest.fixture
def postgres() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_a_job_on_postgres_trains_cancels_and_deletes(serve, postgres: str) -> None:
    with serve(postgres) as api:
        assert api.get("/readyz").json()["database"].startswith("PostgreSQL 127.0.0.1:5432/")
        done = api.post("/v1/train", json=digits_job(DIGITS_MLP, epochs=2, device="cpu")).json()
        assert done["status"] == "succeeded", done["error"]
        assert [h["epoch"] for h in done["history"]] == [1, 2]
        long = api.post("/v1/jobs", json=digits_job(DIGITS_MLP, epochs=100, batch_size=1, device="cpu"))
        job_id = long.json()["id"]
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 409
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
        assert api.get("/v1/jobs").json()["count"] == 2
        for finished in (done["id"], job_id):
            assert api.delete(f"/v1/jobs/{finished}").status_code == 204
            assert api.get(f"/v1/jobs/{finished}").status_code == 404
        assert api.get("/v1/jobs").json()["count"] == 0


def assert_complete(api: TestClient, job_id: str, epochs: int) -> None:
    """The job succeeded with each epoch once, and its events are numbered without gaps."""
    result = api.get(f"/v1/jobs/{job_id}").json()
    assert result["status"] == "succeeded", result["error"]
    assert [h["epoch"] for h in result["history"]] == list(range(1, epochs + 1))
    events = app.state.jobs.store.events_after(job_id, 0)
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert [data for _, kind, data in events if kind == "epoch"] == result["history"]


def wait_until(api: TestClient, job_id: str, statuses: tuple[str, ...], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while api.get(f"/v1/jobs/{job_id}").json()["status"] not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} not {statuses} within {timeout_s} s"
        time.sleep(0.2)


def test_connections_dropped_mid_job_lose_nothing(serve, postgres: str, monkeypatch) -> None:
    client = serve(postgres)
    monkeypatch.setattr(settings, "db_retry_seconds", 10)
    with client as api:
        body = digits_job(DIGITS_MLP, epochs=4, batch_size=16, device="cpu")
        job_id = api.post("/v1/jobs", json=body).json()["id"]
        wait_until(api, job_id, ("running", *TERMINAL))
        drops = 0
        deadline = time.monotonic() + 180
        while api.get(f"/v1/jobs/{job_id}").json()["status"] not in TERMINAL:
            drops += drop_connections(postgres)  # the actor's and this API's, as a failover would
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert drops >= 2
        assert_complete(api, job_id, 4)


def test_a_write_lock_held_20_s_mid_job_is_waited_out(serve, tmp_path: Path) -> None:
    """Issue 13's repro: another process holds BEGIN IMMEDIATE on jobs.sqlite3 for 20 s during a
    job. The worker's writes wait it out; reads (and so the API) go on meanwhile."""
    with serve() as api:
        body = digits_job(DIGITS_MLP, epochs=3, batch_size=16, device="cpu")
        job_id = api.post("/v1/jobs", json=body).json()["id"]
        wait_until(api, job_id, ("running", *TERMINAL))
        with sqlite_write_lock(tmp_path / "jobs.sqlite3", 20) as lock:
            time.sleep(1)
            assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
            assert api.get("/v1/jobs").status_code == 200
            assert lock.poll() is None  # the reads came back while the lock was held: none waited
        wait_until(api, job_id, TERMINAL, 60)
        assert_complete(api, job_id, 3)
