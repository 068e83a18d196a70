"""Nothing lost across an API crash: a real server process (uvicorn, its embedded Ray) killed
with SIGKILL mid-job, then started again on the same data directory. Also: /readyz turns
not-ready when Ray's control store dies."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import clean_env, start_server, wait_for

from app.examples import DIGITS_MLP, digits_job


def job(**extra: object) -> dict:
    return digits_job(DIGITS_MLP, **{"optimizer": {"type": "Adam"}, "epochs": 2, "device": "cpu", **extra})


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``: ``{pid: command name}``."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), name)
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


class Server:
    """``uvicorn app.main:app`` in its own session, on a free loopback port."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        env = clean_env(MB_DATA_DIR=str(data_dir), MB_RAY_NUM_CPUS="1")
        self.proc, url = start_server(env, log=log, new_session=True)
        self.log = log
        self.api = httpx.Client(base_url=url, timeout=30)
        wait_for("the API and its Ray", lambda: self.api.get("/readyz").json()["ray"] == "up")

    def kill(self) -> None:
        """SIGKILL the whole session: the API and whatever of its Ray is left."""
        self.api.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def test_finished_jobs_survive_a_crash_and_running_ones_fail_with_a_reason(
    tmp_path: Path, servers: list
) -> None:
    data = tmp_path / "data"
    first = Server(data, tmp_path / "first.log")
    servers.append(first)
    done = first.api.post("/v1/train", json=job()).json()
    assert done["status"] == "succeeded", done
    response = first.api.post("/v1/jobs", json=job(epochs=100, batch_size=1))
    assert response.status_code == 202, response.text
    long_id = response.json()["id"]
    wait_for(
        "the long job to run", lambda: first.api.get(f"/v1/jobs/{long_id}").json()["status"] == "running"
    )

    os.kill(first.proc.pid, signal.SIGKILL)  # the API dies mid-job, nothing shuts down cleanly
    first.proc.wait(timeout=30)
    first.kill()

    second = Server(data, tmp_path / "second.log")
    servers.append(second)
    assert second.api.get(f"/v1/jobs/{done['id']}").json() == done
    interrupted = second.api.get(f"/v1/jobs/{long_id}").json()
    assert interrupted["status"] == "failed", interrupted
    assert "API stopped before the job finished" in interrupted["error"]
    assert interrupted["node"] is not None and interrupted["finished_at"] is not None
    assert second.api.get("/v1/jobs").json()["count"] == 2
    # New jobs run as before.
    assert second.api.post("/v1/train", json=job(epochs=1)).json()["status"] == "succeeded"

    # Ray's control store dies: the API stays up but says it is not ready.
    gcs = [pid for pid, name in descendants(second.proc.pid).items() if name.startswith("gcs_server")]
    assert gcs, descendants(second.proc.pid)
    os.kill(gcs[0], signal.SIGKILL)
    wait_for("readyz to report Ray down", lambda: second.api.get("/readyz").status_code == 503, 30)
    ready = second.api.get("/readyz").json()
    assert ready["status"] == "not ready" and ready["ray"] == "down"
    assert second.api.get("/healthz").status_code == 200
    refused = second.api.post("/v1/jobs", json=job())
    assert refused.status_code == 503 and "Ray" in refused.json()["detail"], refused.text
