"""The job store on both databases it supports: a fresh SQLite file and a fresh schema of a real
PostgreSQL per test. Its life cycle, concurrent cancels from two stores (two API replicas), the
upgrade of a first-release database, and the faults: a held write lock, a corrupt file, an
unreachable server, connections dropped mid-job."""

from __future__ import annotations

import fnmatch
import json
import logging
import socket
import sqlite3
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pydantic import ValidationError

from app.core.config import settings
from app.jobs import retention
from app.jobs.domain import EpochResult, JobMemory, JobStatus, Metrics, NodeInfo, Progress
from app.jobs.store import MIGRATIONS, JobStore, StoreNotWritable, StoreUnavailable, jobs
from tests.databases import drop_connections, postgres_schema, sqlite_write_lock

BACKENDS = ["sqlite", "postgresql"]
NODE = NodeInfo(node_id="n", ip="127.0.0.1", hostname="h", pid=7)


def progress(epoch: int, step: int, loss: float = 0.5) -> Progress:
    return Progress(epoch=epoch, step=step, steps_total=100, loss=loss)


def entry(epoch: int, step: int | None = None) -> EpochResult:
    step = 10 * epoch if step is None else step
    return EpochResult(epoch=epoch, step=step, train_loss=0.5, val_loss=0.4, val_accuracy=0.9)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        with postgres_schema() as schema_url:
            yield schema_url


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path, url, retry_seconds=5)
    yield store
    store.close()


def test_a_job_through_its_life(store: JobStore) -> None:
    request = {"model": {"layers": [{"type": "Linear", "out_features": 2}]}, "epochs": 2, "x": 1.5}
    store.create("j1", request, 1234, owner="a" * 64)
    store.create("j2", {"other": True}, 1, owner="b" * 64)
    job = store.get("j1")
    assert job.status == JobStatus.QUEUED and job.request == request and job.owner == "a" * 64
    assert job.history == [] and job.restarts == 0 and job.memory is None and job.time_limit_s is None
    assert store.get("j1", with_request=False).request is None and store.get("nope") is None

    page, count = store.list(0, 10)
    assert [j.id for j in page] == ["j2", "j1"] and count == 2 and page[0].request is None
    assert [j.id for j in store.list(0, 10, owner="a" * 64)[0]] == ["j1"]
    assert store.list(0, 10, owner="c" * 64) == ([], 0)
    assert store.count_active() == 2 and [j.id for j in store.active()] == ["j1", "j2"]

    assert store.mark_running("j1", "cpu", NODE) and not store.mark_running("j1", "cpu", NODE)
    assert store.record_progress("j1", progress(1, 50))
    assert not store.record_progress("j1", progress(1, 50))
    assert not store.record_progress("j1", progress(1, 40, loss=0.6))
    epoch = entry(1, 50)
    assert store.record_epoch("j1", epoch, progress(1, 50))
    assert not store.record_epoch("j1", epoch, progress(1, 60)), (
        "an epoch already recorded is not recorded again"
    )
    assert store.add_restart("j1", node=NODE.model_copy(update={"pid": 8})) == 1
    assert [(seq, kind) for seq, kind, _ in store.events_after("j1", 0)] == [(1, "progress"), (2, "epoch")]
    assert store.events_after("j1", 1) == [(2, "epoch", epoch.model_dump())]

    memory = JobMemory(estimated_bytes=1234, measured_peak_bytes=999, how="tracemalloc")
    metrics = Metrics(train_loss=0.5, val_loss=0.4, val_accuracy=0.9)
    assert store.finish("j1", JobStatus.SUCCEEDED, metrics=metrics, memory=memory)
    assert not store.finish("j1", JobStatus.FAILED, "late"), "a finished job stays finished"
    job = store.get("j1")
    assert job.status == JobStatus.SUCCEEDED and job.metrics == metrics and job.memory == memory
    assert job.history == [epoch] and job.restarts == 1 and job.node.pid == 8
    assert job.created_at <= job.started_at <= job.finished_at and job.duration_s >= 0
    assert store.count_active() == 1

    assert not store.delete("j2"), "an active job is not deleted"
    assert store.delete("j1") and not store.delete("j1")
    assert store.get("j1") is None and store.events_after("j1", 0) == []
    store.ping()


def test_another_owners_job_is_not_read_at_all(store: JobStore) -> None:
    """Issue 21, item 16: the owner is checked before anything is loaded. The stored request is
    made unreadable (a JSON array, not the object a ``Job`` holds): the owner's read fails on it,
    another owner's read answers "no such job" without ever loading it."""
    store.create("j", {"epochs": 1}, 1, owner="a" * 64)
    store._write(lambda conn: conn.execute(jobs.update().where(jobs.c.id == "j").values(request=[1, 2])))
    assert store.get("j", owner="b" * 64) is None
    assert store.get("j", owner="b" * 64, with_request=False) is None
    assert store.get("j", owner="a" * 64, with_request=False).owner == "a" * 64
    with pytest.raises(ValidationError, match="request"):
        store.get("j", owner="a" * 64)


def test_of_two_replicas_cancelling_at_once_one_wins(url: str, tmp_path: Path) -> None:
    replicas = [JobStore(tmp_path, url, retry_seconds=10) for _ in range(2)]
    try:
        for n in range(3):
            job_id = f"race{n}"
            replicas[0].create(job_id, {}, 1)
            barrier = threading.Barrier(6)
            wins: list[bool] = []

            def cancel(
                store: JobStore, job_id: str = job_id, barrier: threading.Barrier = barrier, wins: list = wins
            ) -> None:
                barrier.wait()
                wins.append(store.finish(job_id, JobStatus.CANCELLED, "cancelled by request"))

            threads = [threading.Thread(target=cancel, args=(replicas[i % 2],)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(wins) == [False] * 5 + [True]
            assert replicas[1].get(job_id).status == JobStatus.CANCELLED
    finally:
        for store in replicas:
            store.close()


def test_stores_opening_a_new_database_at_once_migrate_it_once(url: str, tmp_path: Path) -> None:
    """API replicas (and workers) starting together on an empty database."""
    stores = [JobStore(tmp_path, url) for _ in range(4)]
    errors: list[Exception] = []

    def open_store(store: JobStore) -> None:
        try:
            store.open()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=open_store, args=(store,)) for store in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "the stores deadlocked migrating"
        assert errors == []
        stores[0].create("j", {}, 1)
        assert all(store.get("j").status == JobStatus.QUEUED for store in stores)
    finally:
        for store in stores:
            store.close()


def test_the_migrations_ship_with_the_package() -> None:
    """``pip install .`` (the Docker image) installs every migration file: pyproject's package-data."""
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app"]
    files = [p.relative_to(root / "app").as_posix() for p in MIGRATIONS.rglob("*") if p.is_file()]
    files = [f for f in files if "__pycache__" not in f]
    assert "jobs/migrations/versions/0001_initial.py" in files
    assert all(any(fnmatch.fnmatch(f, glob) for glob in globs) for f in files), (files, globs)


def test_concurrent_writers_of_one_job_get_distinct_event_numbers(url: str, tmp_path: Path) -> None:
    replicas = [JobStore(tmp_path, url, retry_seconds=10) for _ in range(2)]
    try:
        replicas[0].create("busy", {}, 1)

        def report(store: JobStore, start: int) -> None:
            for n in range(start, start + 10):  # distinct epochs: none is taken for a repeat
                store.record_epoch("busy", entry(n), progress(n, 10 * n))

        threads = [threading.Thread(target=report, args=(replicas[i % 2], 100 * i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events = replicas[1].events_after("busy", 0)
        assert [seq for seq, _, _ in events] == list(range(1, 41))
        assert sorted(data["epoch"] for _, _, data in events) == sorted(
            100 * i + s for i in range(4) for s in range(10)
        )
    finally:
        for store in replicas:
            store.close()


# The first release's store: its SCHEMA string and its writes, verbatim (app/jobs/store.py before
# SQLAlchemy). A data directory it made must open in this release with every job intact.
FIRST_RELEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    request TEXT NOT NULL,
    memory_estimate_bytes INTEGER NOT NULL,
    device TEXT,
    node TEXT,
    history TEXT NOT NULL DEFAULT '[]',
    metrics TEXT,
    progress TEXT,
    duration_s REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


def _first_release_request(n: int) -> dict:
    """The request stored with the n-th job; the running one asked for a time limit of its own."""
    return {"epochs": 3, "n": n, "time_limit_s": 30.0} if n == 2 else {"epochs": 3, "n": n}


def _first_release_database(path: Path) -> dict[str, dict]:
    """A jobs.sqlite3 as the first release left it: a finished, a failed and a running job."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(FIRST_RELEASE_SCHEMA)
    node = {"node_id": "abc", "ip": "127.0.0.1", "hostname": "worker-1", "pid": 42}
    epoch = {"epoch": 1, "step": 23, "train_loss": 1.5, "val_loss": 1.25, "val_accuracy": 0.5}
    jobs = {
        "done": ("succeeded", [epoch], {"train_loss": 1.5, "val_loss": 1.25, "val_accuracy": 0.5}, None),
        "bad": ("failed", [], None, "training failed: boom"),
        "live": ("running", [epoch], None, None),
    }
    for n, (job_id, (status, history, metrics, error)) in enumerate(jobs.items()):
        db.execute(
            "INSERT INTO jobs (id, status, created_at, request, memory_estimate_bytes) "
            "VALUES (?, 'queued', ?, ?, ?)",
            (job_id, 1_700_000_000.0 + n, json.dumps(_first_release_request(n)), 1000 + n),
        )
        db.execute(
            "UPDATE jobs SET status = ?, started_at = ?, device = 'cpu', node = ?, history = ?, "
            "metrics = ?, error = ?, finished_at = ? WHERE id = ?",
            (
                status,
                1_700_000_001.0 + n,
                json.dumps(node),
                json.dumps(history),
                None if metrics is None else json.dumps(metrics),
                error,
                None if status == "running" else 1_700_000_009.0 + n,
                job_id,
            ),
        )
        for seq, entry in enumerate(history, 1):
            db.execute(
                "INSERT INTO events (job_id, seq, kind, data) VALUES (?, ?, 'epoch', ?)",
                (job_id, seq, json.dumps(entry)),
            )
    db.close()
    return {
        job_id: {"status": status, "history": history, "metrics": metrics, "error": error}
        for job_id, (status, history, metrics, error) in jobs.items()
    }


def _with_no_outputs(fields: dict) -> dict:
    """What a first-release row reads back as: its metrics and epochs have no per-output figures
    (``outputs``, which graph jobs added), and nothing else changes."""
    metrics = fields["metrics"]
    return {
        **fields,
        "history": [{**epoch, "outputs": None} for epoch in fields["history"]],
        "metrics": None if metrics is None else {**metrics, "outputs": None},
    }


def test_a_data_directory_from_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    expected = _first_release_database(tmp_path / "jobs.sqlite3")
    store = JobStore(tmp_path)  # as the API opens it: MB_DATA_DIR
    try:
        page, count = store.list(0, 10)
        assert count == 3 and [j.id for j in page] == ["live", "bad", "done"]
        for n, (job_id, fields) in enumerate(expected.items()):
            job = store.get(job_id)
            assert job.model_dump(include=set(fields)) == _with_no_outputs(fields), job_id
            assert job.request == _first_release_request(n) and job.memory_estimate_bytes == 1000 + n
            assert job.node.pid == 42 and job.owner is None and job.restarts == 0
            assert [data for _, _, data in store.events_after(job_id, 0)] == fields["history"]
        # The time limit came out of the requests into its column: the reaper reads it from there.
        assert [(j.id, j.time_limit_s, j.request) for j in store.active()] == [("live", 30.0, None)]
        assert store.get("done").time_limit_s is None  # it asked for none: the server's
        # The old rows take new writes: the next epoch of the running job gets the next event number.
        epoch2 = EpochResult(epoch=2, step=46, train_loss=1.0, val_loss=1.0, val_accuracy=0.75)
        assert store.record_epoch("live", epoch2, Progress(epoch=2, step=46, steps_total=69, loss=1.0))
        assert store.events_after("live", 1) == [(2, "epoch", epoch2.model_dump())]
        metrics = Metrics(train_loss=1.0, val_loss=1.0, val_accuracy=0.75)
        assert store.finish("live", JobStatus.SUCCEEDED, metrics=metrics)
        assert store.get("live").duration_s > 0
    finally:
        store.close()
    version = sqlite3.connect(tmp_path / "jobs.sqlite3").execute("SELECT version_num FROM alembic_version")
    assert version.fetchone()[0] == "0004"


def test_a_postgres_database_at_the_first_revision_is_upgraded_in_place(tmp_path: Path) -> None:
    with postgres_schema() as url:
        first = JobStore(tmp_path, url, migrate=False)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with first._engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.exec_driver_sql(
                "INSERT INTO jobs (id, status, created_at, request, memory_estimate_bytes) VALUES "
                """('old', 'succeeded', 1700000000.25, '{"epochs": 1}', 5), """
                """('limited', 'queued', 1700000001.5, '{"epochs": 1, "time_limit_s": 12.5}', 5)"""
            )
        first.close()
        store = JobStore(tmp_path, url)
        try:
            job = store.get("old")
            assert job.status == JobStatus.SUCCEEDED and job.request == {"epochs": 1}
            assert job.created_at == 1700000000.25 and job.history == [] and job.restarts == 0
            assert job.time_limit_s is None
            assert [(j.id, j.time_limit_s) for j in store.active()] == [("limited", 12.5)]
            with store._engine.connect() as conn:
                version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            assert version == "0004"
        finally:
            store.close()


def test_a_corrupt_sqlite_file_is_moved_aside_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"this is not a database, it was overwritten by something " * 100
    (tmp_path / "jobs.sqlite3").write_bytes(garbage)
    store = JobStore(tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="app.jobs.store"):
            store.create("fresh", {}, 1)
        assert store.list(0, 10)[1] == 1
    finally:
        store.close()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "not a readable SQLite database" in errors[0].getMessage()
    moved = list(tmp_path.glob("jobs.sqlite3.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    assert str(moved[0]) in errors[0].getMessage()


def test_a_held_write_lock_is_waited_out_and_reads_go_on(tmp_path: Path) -> None:
    store = JobStore(tmp_path, retry_seconds=30)
    try:
        store.create("j", {}, 1)
        with sqlite_write_lock(tmp_path / "jobs.sqlite3", 4.0) as lock:
            started = time.monotonic()
            assert store.get("j").status == JobStatus.QUEUED and store.list(0, 5)[1] == 1
            assert lock.poll() is None, "reads must not wait on a writer's lock (they came back after it)"
            assert store.finish("j", JobStatus.CANCELLED, "cancelled by request")  # waits the lock out
            assert time.monotonic() - started > 2
        assert store.get("j").status == JobStatus.CANCELLED
    finally:
        store.close()


def test_a_write_lock_held_past_the_retries_is_store_unavailable(tmp_path: Path) -> None:
    """Busy, not refusing writes: readiness's write probe neither waits on the lock nor fails."""
    store = JobStore(tmp_path, retry_seconds=0.5)
    try:
        store.create("j", {}, 1)
        with sqlite_write_lock(tmp_path / "jobs.sqlite3", 10.0) as lock:
            store.check_writable()  # a busy lock is not a store that takes no writes
            assert lock.poll() is None, "the probe came back while the lock was held"
            with pytest.raises(StoreUnavailable) as caught:
                store.finish("j", JobStatus.CANCELLED)
            assert lock.poll() is None  # it gave up while the lock was still held (about two 1 s waits)
        assert str(tmp_path / "jobs.sqlite3") in str(caught.value) and "locked" in str(caught.value)
        assert not isinstance(caught.value, StoreNotWritable)
        assert store.finish("j", JobStatus.CANCELLED), "the store works again once the lock is gone"
    finally:
        store.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_postgres_is_store_unavailable_naming_it(tmp_path: Path) -> None:
    port = closed_port()
    store = JobStore(tmp_path, f"postgresql+psycopg://mb:secret@127.0.0.1:{port}/jobs", retry_seconds=0.5)
    try:
        started = time.monotonic()
        for call in (store.ping, lambda: store.list(0, 5), lambda: store.create("j", {}, 1)):
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert caught.value.database == f"PostgreSQL 127.0.0.1:{port}/jobs"
            assert "secret" not in str(caught.value)
        assert time.monotonic() - started < 10
    finally:
        store.close()


def test_connections_dropped_mid_job_lose_nothing(tmp_path: Path) -> None:
    with postgres_schema() as url:
        store = JobStore(tmp_path, url, retry_seconds=10)
        try:
            store.create("j", {}, 1)
            store.mark_running("j", "cpu", NODE)
            for epoch in range(1, 4):
                assert drop_connections(url) >= 1  # the store's pooled connections die between writes
                store.record_progress("j", progress(epoch, epoch))
                assert store.record_epoch("j", entry(epoch), progress(epoch, epoch))
            drop_connections(url)
            assert store.finish(
                "j", JobStatus.SUCCEEDED, metrics=Metrics(train_loss=0, val_loss=0, val_accuracy=1)
            )
            job = store.get("j")
            assert job.status == JobStatus.SUCCEEDED and job.history == [entry(e) for e in (1, 2, 3)]
            kinds = [(seq, kind) for seq, kind, _ in store.events_after("j", 0)]
            assert kinds == [(s, "progress" if s % 2 else "epoch") for s in range(1, 7)]
        finally:
            store.close()


def test_retention_prunes_old_finished_jobs_with_their_files(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "data_dir", tmp_path)
    for job_id in ("old", "recent", "active"):
        store.create(job_id, {}, 1)
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (tmp_path / "jobs" / job_id / "model.safetensors").write_bytes(b"w")
    store.record_progress("old", progress(1, 1))
    store.finish("old", JobStatus.SUCCEEDED)
    store.finish("recent", JobStatus.FAILED, "boom")
    day = 86400
    assert retention.prune(store, 0) == []  # 0: keep forever
    assert retention.prune(store, 1, now=time.time() + day / 2) == []
    assert retention.prune(store, 1, now=time.time() + 2 * day) == ["old", "recent"]
    assert store.get("old") is None and store.get("recent") is None and store.events_after("old", 0) == []
    assert store.get("active").status == JobStatus.QUEUED
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["active"]
