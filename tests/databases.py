"""Databases for the job store's tests: SQLite files, and a fresh schema of a real PostgreSQL per
test (``MB_TEST_POSTGRES_URL``, by default the local server that ``make test`` installs and starts
through scripts/install_system_deps.sh), so parallel runs never share tables."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
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


COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the simple-query message psycopg sends to commit


class LostCommit:
    """A TCP proxy in front of PostgreSQL that, once ``armed``, lets the next COMMIT reach the
    server and cuts the connection before the answer comes back, as a network cut or a failover at
    that moment would: the transaction is committed, and its client cannot know it."""

    def __init__(self, url: str) -> None:
        self.server = sa.make_url(url)
        self.armed = threading.Event()
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = self.server.set(host="127.0.0.1", port=self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                client, _ = self._listener.accept()
                upstream = socket.create_connection((self.server.host, self.server.port or 5432))
                committing = threading.Event()
                threading.Thread(target=self._up, args=(client, upstream, committing), daemon=True).start()
                threading.Thread(target=self._down, args=(upstream, client, committing), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, committing: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if COMMIT in data and self.armed.is_set():
                    self.armed.clear()
                    committing.set()
                upstream.sendall(data)

    def _down(self, upstream: socket.socket, client: socket.socket, committing: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if committing.is_set():  # the server's answer to that COMMIT: never delivered
                    self.cut.set()
                    break
                client.sendall(data)
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
