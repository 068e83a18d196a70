"""Shared fixtures: in-process clients for the app (no network, no server); and, at the end of
the run, a check that it left no process behind (no Ray, no server)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

# Traces run in the test process unless a test starts a trace pool (tests/test_trace_pool.py):
# the in-process path is the per-operator budget's, and no test pays for warm workers it does not use.
os.environ.setdefault("MB_TRACE_PROCESSES", "0")

from app.core.config import settings
from app.core.security import APILock
from app.jobs import ray_runtime
from app.jobs.engine import JobEngine
from app.jobs.store import JobStore
from app.main import app

# Every process this run starts inherits it (servers, their embedded Rays, Ray's workers), so
# what is left at the end is found by it, and other runs' processes on the machine are not.
RUN_VARIABLE = "MODEL_BUILDER_TEST_RUN"
os.environ[RUN_VARIABLE] = uuid.uuid4().hex
LEFTOVER_GRACE_S = 15.0  # processes killed at the very end may take this long to go


@pytest.fixture(scope="session")
def client() -> TestClient:
    """The app without its lifespan (no job store, no Ray): the analysis endpoints need neither.
    Tests of training jobs enter their own ``with TestClient(app)`` to run the lifespan."""
    return TestClient(app)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with its lifespan (job store, reaper, embedded Ray) on a data directory of the
    test module's own."""
    data_dir, settings.data_dir = settings.data_dir, tmp_path_factory.mktemp("jobs")
    try:
        with TestClient(app) as client:
            yield client
    finally:
        settings.data_dir = data_dir


@pytest.fixture(scope="session", autouse=True)
def stop_embedded_rays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The embedded Ray outlives the API by design; stop those this session's data dirs started."""
    yield
    for lock in tmp_path_factory.getbasetemp().glob("**/ray/lock"):
        ray_runtime.stop_embedded(lock.parent.parent)


@pytest.fixture
def datasets_dir(tmp_path: Path) -> Iterator[Path]:
    """The app on a data directory of the test's own with a job store, no lifespan (no Ray: the
    dataset routes need none) and no keys; the data directory."""
    saved = settings.data_dir, getattr(app.state, "jobs", None), app.state.api_lock
    settings.data_dir = tmp_path
    app.state.jobs = JobEngine(JobStore(tmp_path))
    app.state.api_lock = APILock()
    try:
        yield tmp_path
    finally:
        app.state.jobs.store.close()
        settings.data_dir, app.state.jobs, app.state.api_lock = saved


@pytest.fixture
def datasets_api(datasets_dir: Path) -> TestClient:
    """A client of the app set up by ``datasets_dir``."""
    return TestClient(app)


def leftovers() -> dict[int, str]:
    """This run's processes still alive, but for this one: pid -> command line."""
    marker = f"{RUN_VARIABLE}={os.environ[RUN_VARIABLE]}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it left a process behind (a Ray, a server); kill what it left. With
    ``-n`` (pytest-xdist) each worker checks what it started; the controller started only them."""
    if session.config.pluginmanager.hasplugin("dsession"):
        return
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    lines = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        said = f"\nthe test run left {len(left)} processes behind (now killed):\n{lines}"
        reporter.write_line(said, red=True)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
