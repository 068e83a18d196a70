"""Jobs persisted in SQLite under the data directory: spec, status, history, metrics, events.

One connection shared by the API's threads behind a lock (SQLite serialises writers anyway);
WAL mode so a crash never leaves a half-written job. Status changes out of ``queued`` /
``running`` are conditional updates, so a cancel and a finishing worker cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
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
    error TEXT,
    memory TEXT
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
TERMINAL = ("succeeded", "failed", "cancelled")
_JSON_COLUMNS = ("request", "node", "history", "metrics", "progress", "memory")


class JobStore:
    """The job table and each job's progress events."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "jobs.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "memory" not in columns:  # a database made before jobs recorded their memory
            self._db.execute("ALTER TABLE jobs ADD COLUMN memory TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create(self, job_id: str, request: dict, memory_estimate_bytes: int) -> None:
        self._run(
            "INSERT INTO jobs (id, status, created_at, request, memory_estimate_bytes) "
            "VALUES (?, 'queued', ?, ?, ?)",
            (job_id, time.time(), json.dumps(request), memory_estimate_bytes),
        )

    def get(self, job_id: str, with_request: bool = True) -> dict[str, Any] | None:
        row = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _decode(row, with_request)

    def list(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The most recent jobs first, without their requests, and the number of stored jobs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
            count = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return [_decode(row, with_request=False) for row in rows], count

    def count_active(self) -> int:
        return self._run("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]

    def mark_running(self, job_id: str, device: str, node: dict) -> bool:
        cursor = self._run(
            "UPDATE jobs SET status = 'running', started_at = ?, device = ?, node = ? "
            "WHERE id = ? AND status = 'queued'",
            (time.time(), device, json.dumps(node), job_id),
        )
        return cursor.rowcount == 1

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Holds the lock and wraps statements in BEGIN / COMMIT (ROLLBACK on error)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record_progress(self, job_id: str, progress: dict) -> None:
        with self._transaction():
            self._db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))
            self._add_event(job_id, "progress", progress)

    def record_epoch(self, job_id: str, entry: dict, progress: dict) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET history = json_insert(history, '$[#]', json(?)), progress = ? WHERE id = ?",
                (json.dumps(entry), json.dumps(progress), job_id),
            )
            self._add_event(job_id, "epoch", entry)

    def _add_event(self, job_id: str, kind: str, data: dict) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, seq, kind, data) "
            "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ? FROM events WHERE job_id = ?",
            (job_id, kind, json.dumps(data), job_id),
        )

    def events_after(self, job_id: str, seq: int) -> list[tuple[int, str, dict]]:
        rows = self._run(
            "SELECT seq, kind, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, seq)
        ).fetchall()
        return [(row["seq"], row["kind"], json.loads(row["data"])) for row in rows]

    def finish(
        self,
        job_id: str,
        status: str,
        error: str | None = None,
        metrics: dict | None = None,
        duration_s: float | None = None,
        memory: dict | None = None,
    ) -> bool:
        """Move an active job to ``status``; False (and no change) when it had already finished.

        ``memory``: ``{estimated_bytes, measured_peak_bytes, how}`` of a finished run.
        """
        assert status in TERMINAL
        now = time.time()
        cursor = self._run(
            "UPDATE jobs SET status = ?, error = ?, metrics = COALESCE(?, metrics), finished_at = ?, "
            "duration_s = COALESCE(?, CASE WHEN started_at IS NULL THEN NULL ELSE ? - started_at END), "
            "memory = COALESCE(?, memory) WHERE id = ? AND status IN ('queued', 'running')",
            (
                status,
                error,
                None if metrics is None else json.dumps(metrics),
                now,
                duration_s,
                now,
                None if memory is None else json.dumps(memory),
                job_id,
            ),
        )
        return cursor.rowcount == 1

    def fail_active(self, reason: str) -> int:
        """Fail every job left queued or running (by an API that stopped); how many there were."""
        cursor = self._run(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? "
            "WHERE status IN ('queued', 'running')",
            (reason, time.time()),
        )
        return cursor.rowcount


def _decode(row: sqlite3.Row, with_request: bool) -> dict[str, Any]:
    job = dict(row)
    for column in _JSON_COLUMNS:
        if job[column] is not None:
            job[column] = json.loads(job[column])
    if not with_request:
        job["request"] = None
    return job
