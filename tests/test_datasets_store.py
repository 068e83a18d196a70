"""Dataset records on both databases the job store supports (a fresh SQLite file, a fresh
PostgreSQL schema per test), the migration that adds them to an existing database, and the
part files of uploads whose process died."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from app.datasets.description import ArrayInfo, Description
from app.datasets.files import STALE_PART_S, DatasetFiles
from app.datasets.store import Dataset, DatasetStore
from app.jobs.store import MIGRATIONS, JobStore
from tests.databases import postgres_schema

A, B = "a" * 64, "b" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        with postgres_schema() as schema_url:
            yield schema_url


def dataset(
    sha: str, owner: str, size: int = 100, at: float = 1.0, resize: list[int] | None = None
) -> Dataset:
    array = ArrayInfo(name="x", shape=[3], dtype="float32", min=0, max=2, mean=1)
    description = Description(format="npz", samples=3, arrays=[array])
    return Dataset(
        id=sha,
        owner=owner,
        name="x.npz",
        size_bytes=size,
        resize=resize,
        description=description,
        created_at=at,
    )


class Over(Exception):
    pass


def test_records_through_their_life(url: str, tmp_path: Path) -> None:
    jobs = JobStore(tmp_path, url, retry_seconds=5)
    store = DatasetStore(jobs)
    try:
        assert store.add(dataset(A, "alice", at=1.0), quota=1000, over_quota=Over())
        assert not store.add(dataset(A, "alice"), quota=1000, over_quota=Over())  # the same: kept
        assert store.add(dataset(B, "alice", at=2.0, resize=[4, 4]), quota=1000, over_quota=Over())
        assert store.add(dataset(A, "bob", at=3.0), quota=1000, over_quota=Over())
        with pytest.raises(Over):
            store.add(dataset("c" * 64, "bob", size=901), quota=1000, over_quota=Over())
        assert store.bytes_of("alice") == 200 and store.bytes_of("bob") == 100 and store.bytes_of("eve") == 0
        assert store.get(A, "alice") == dataset(A, "alice", at=1.0)
        assert store.get(B, "bob") is None and store.get(B, "root", admin=True).owner == "alice"
        page, count = store.list(0, 10, "alice")
        assert [d.id for d in page] == [B, A] and count == 2
        assert [d.owner for d in store.list(0, 2, None)[0]] == ["bob", "alice"] and store.list(0, 2, None)[
            1
        ] == 3
        assert store.described(B, [4, 4]) == dataset(B, "x").description and store.described(B, None) is None
        assert store.delete(A, "alice") == 1 and store.referenced(A)  # bob's record remains
        assert store.delete(A, "alice") == 0 and store.delete(A, "root", admin=True) == 1
        assert not store.referenced(A) and store.referenced(B)
    finally:
        jobs.close()


def test_a_database_at_revision_0002_gets_the_datasets_table(url: str, tmp_path: Path) -> None:
    old = JobStore(tmp_path, url, migrate=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old._engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, status, created_at, request, memory_estimate_bytes, history, restarts) "
            """VALUES ('old', 'succeeded', 1.5, '{"epochs": 1}', 5, '[]', 0)"""
        )
        assert "datasets" not in sa.inspect(conn).get_table_names()
    old.close()
    jobs = JobStore(tmp_path, url)
    try:
        assert jobs.get("old").status == "succeeded"
        store = DatasetStore(jobs)
        assert store.add(dataset(A, ""), quota=1000, over_quota=Over()) and store.get(A, "") is not None
        with jobs._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0004"
    finally:
        jobs.close()


def test_part_files_of_dead_uploads_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    files = DatasetFiles(tmp_path / "datasets")
    live, handle = files.new_part()  # an upload in progress holds its lock
    dead, dead_handle = files.new_part()
    dead_handle.close()  # its process died: the lock went with it
    fresh, fresh_handle = files.new_part()
    fresh_handle.close()  # just created, not locked yet: spared for STALE_PART_S
    old = time.time() - STALE_PART_S - 1
    for path in (live, dead):
        os.utime(path, (old, old))
    try:
        assert files.sweep() == [dead]
        assert live.exists() and fresh.exists() and not dead.exists()
        with pytest.raises(BlockingIOError), open(live, "rb") as other:  # still the upload's
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        handle.close()
    assert sorted(files.sweep(now=time.time() + STALE_PART_S + 1)) == sorted([live, fresh])
