"""Databases for the job store's tests: SQLite files, and a fresh schema of a real PostgreSQL per
test (``MB_TEST_POSTGRES_URL``, by default the local server that ``make test`` installs and starts
through scripts/install_system_deps.sh), so parallel runs never share tables."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get("MB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

TERMINATE = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a new, empty schema (its connections see only it; ``application_name`` is the
    schema's name, to find them); dropped afterwards."""
    name = f"mb_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {name}"))
        except sa.exc.OperationalError as e:
            pytest.fail(
                f"no PostgreSQL at {POSTGRES_URL} ({e.orig}); make test installs and starts one "
                "(scripts/install_system_deps.sh), or set MB_TEST_POSTGRES_URL"
            )
        url = sa.make_url(POSTGRES_URL).update_query_dict(
            {"options": f"-csearch_path={name}", "application_name": name}
        )
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(TERMINATE), {"n": name})
                conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
    finally:
        admin.dispose()


def drop_connections(url: str) -> int:
    """Kill the server side of every connection to ``url``'s schema (as a failover or a network cut
    would); how many there were."""
    name = sa.make_url(url).query["application_name"]
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return conn.execute(sa.text(TERMINATE), {"n": name}).scalar_one()
    finally:
        admin.dispose()


# Another process holds SQLite's write lock (as a backup tool or a stuck writer would).
_HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@contextmanager
def sqlite_write_lock(path: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """``BEGIN IMMEDIATE`` held on ``path`` by another process for ``seconds`` (from when this enters)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
