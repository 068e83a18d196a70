"""Jobs outlive the processes around them, on real server processes and a real embedded Ray.

- The API killed with SIGKILL mid-job and started again on the same data directory: the
  embedded Ray (its own session) lives on, the job keeps running and succeeds, SSE resumes
  with ``Last-Event-ID`` without gaps or repeats.
- The worker killed with SIGKILL mid-job: Ray restarts the job's actor, which resumes from its
  last checkpoint; each epoch is in the history once, the final metrics equal an uninterrupted
  run's (CPU, fixed seed), and the job reports ``restarts: 1``.
- A run that ends while no API runs: its actor holds the weights (the job stays running), and
  killed then, it resumes from its last checkpoint; the next API collects them.
- ``uvicorn --workers 2``: one of the two processes starts the embedded Ray, the other joins it.
- Ray's control store killed: the API stays up and ``/readyz`` says Ray is down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from servers import clean_env, start_server, wait_for

from app.examples import DIGITS_MLP, digits_job
from app.jobs import ray_runtime
from app.jobs.domain import JobStatus
from app.jobs.plan import plan_job
from app.jobs.store import JobStore
from app.jobs.train import train
from app.schemas.jobs import JobCreate

TERMINAL = ("succeeded", "failed", "cancelled")


def job(**extra: object) -> dict:
    body = {"optimizer": {"type": "Adam", "lr": 0.003}, "epochs": 5, "batch_size": 8, "device": "cpu"}
    return digits_job(DIGITS_MLP, **{**body, **extra})


class Server:
    """``uvicorn app.main:app`` in its own session, on a free loopback port."""

    def __init__(self, data_dir: Path, log: Path, *args: str) -> None:
        env = clean_env(MB_DATA_DIR=str(data_dir), MB_RAY_NUM_CPUS="2", MB_PROGRESS_EVERY_STEPS="20")
        self.proc, url = start_server(env, args=args, log=log, new_session=True)
        self.api = httpx.Client(base_url=url, timeout=30)
        try:
            wait_for("the API and its Ray", lambda: self.api.get("/readyz").json()["ray"] == "up")
        except BaseException:
            self.kill()
            raise

    def job(self, job_id: str) -> dict:
        return self.api.get(f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, what: str, done: Callable[[dict], bool]) -> dict:
        def check() -> dict | None:
            current = self.job(job_id)
            return current if done(current) else None

        return wait_for(what, check, 180, 0.3)  # type: ignore[return-value]

    def kill(self) -> None:
        """SIGKILL the API's whole session (not its Ray: that has a session of its own)."""
        self.api.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def gcs_pids(data_dir: Path) -> list[int]:
    return [pid for pid, cmd in ray_runtime.embedded_pids(data_dir).items() if "gcs_server" in cmd.split()[0]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("durable") / "data"
    yield data_dir
    ray_runtime.stop_embedded(data_dir)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def sse(server: Server, job_id: str, last_event_id: int | None = None, stop_after_epochs: int = 0) -> list:
    """``(id, event)`` pairs of the job's stream, until ``done`` (or ``stop_after_epochs`` epochs)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, name, epochs = [], None, 0
    with server.api.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=180) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("id: "):
                events.append((int(line.removeprefix("id: ")), name))
                epochs += name == "epoch"
                if stop_after_epochs and epochs >= stop_after_epochs:
                    return events
            elif line.startswith("data: ") and name == "done":
                return events
    return events


def test_a_job_outlives_the_api_killed_mid_job(tmp_path: Path, data: Path, servers: list) -> None:
    first = Server(data, tmp_path / "first.log")
    servers.append(first)
    gcs = gcs_pids(data)
    assert len(gcs) == 1, ray_runtime.embedded_pids(data)
    response = first.api.post("/v1/jobs", json=job())
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    before = sse(first, job_id, stop_after_epochs=1)  # the client has seen up to the first epoch

    first.kill()  # the API dies mid-job; nothing shuts down cleanly
    assert gcs_pids(data) == gcs, "the embedded Ray died with the API"

    second = Server(data, tmp_path / "second.log")
    servers.append(second)
    assert gcs_pids(data) == gcs, "the second API started another Ray instead of joining"
    assert second.job(job_id)["status"] in ("running", "succeeded")
    after = sse(second, job_id, last_event_id=before[-1][0])
    ids = [i for i, _ in before + after]
    assert ids == list(range(1, len(ids) + 1)), ids  # no gap, no repeat
    done = second.job(job_id)
    assert done["status"] == "succeeded", done["error"]
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3, 4, 5]
    assert [name for _, name in before + after].count("epoch") == 5
    assert done["restarts"] == 0
    # The API that died was waiting for the weights: the second one collected them.
    weights = second.api.get(f"/v1/jobs/{job_id}/weights")
    assert weights.status_code == 200 and len(weights.content) == done["weights"]["size_bytes"]


def test_a_killed_worker_resumes_from_its_checkpoint(data: Path, servers: list) -> None:
    server = servers[1]  # the API that replaced the killed one
    body = job(seed=7)
    response = server.api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    running = server.wait(job_id, "two epochs", lambda j: len(j["history"]) >= 2 or j["status"] in TERMINAL)
    assert running["status"] == "running", running
    os.kill(running["node"]["pid"], signal.SIGKILL)

    done = server.wait(job_id, "the job to end", lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    assert done["restarts"] == 1
    assert done["node"]["pid"] != running["node"]["pid"]
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3, 4, 5]
    checkpoint = data / "jobs" / job_id / "checkpoint"
    assert (checkpoint / "LATEST").read_text() == "epoch-00005"
    # The same run uninterrupted, in this process (one torch thread, as the worker): the same end.
    straight = list(train(plan_job(JobCreate.model_validate(body)).payload))
    assert straight[-1].kind == "done"
    assert done["metrics"] == straight[-1].metrics.model_dump()
    assert done["history"] == [e.entry.model_dump() for e in straight if e.kind == "epoch"]


def test_two_uvicorn_workers_share_one_embedded_ray(tmp_path: Path, servers: list) -> None:
    data_dir = tmp_path / "data"
    try:
        server = Server(data_dir, tmp_path / "workers.log", "--workers", "2")
        servers.append(server)
        # Both processes answer (requests land on either); each has joined the one Ray.
        for _ in range(10):
            assert server.api.get("/readyz").json()["ray"] == "up"
        assert len(gcs_pids(data_dir)) == 1, ray_runtime.embedded_pids(data_dir)
        done = server.api.post("/v1/train", json=job(epochs=1), timeout=180).json()
        assert done["status"] == "succeeded", done["error"]
    finally:
        ray_runtime.stop_embedded(data_dir)


def test_weights_waiting_for_an_api_survive_their_worker_killed(
    tmp_path: Path, data: Path, servers: list
) -> None:
    """No API runs when the run ends: the job stays running, its actor holding the weights. The
    worker is then killed: Ray restarts it, it resumes from the last checkpoint (the final epoch)
    and holds the weights again; an API started later collects them and the job succeeds."""
    server = servers[1]
    job_id = server.api.post("/v1/jobs", json=job(epochs=2)).json()["id"]
    server.wait(job_id, "the job to start", lambda j: j["status"] != "queued")
    server.kill()
    store = JobStore(data)
    try:
        ended = wait_for("the run to end", lambda: (j := store.get(job_id)).history[1:] and j, 180)
        time.sleep(1)  # its weights are made and held
        assert store.get(job_id).status == JobStatus.RUNNING  # nobody has collected them
        os.kill(ended.node.pid, signal.SIGKILL)
        wait_for("the restarted worker", lambda: store.get(job_id).restarts == 1, 180)
    finally:
        store.close()

    servers.append(server)  # (dead) kept for the fixture's teardown; servers[1] is the new API
    servers[1] = Server(data, tmp_path / "third.log")
    done = servers[1].wait(job_id, "the job to end", lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done["error"]
    assert done["restarts"] == 1 and [h["epoch"] for h in done["history"]] == [1, 2]
    weights = servers[1].api.get(f"/v1/jobs/{job_id}/weights")
    assert weights.status_code == 200 and len(weights.content) == done["weights"]["size_bytes"]


def test_readyz_reports_ray_down_when_its_control_store_dies(data: Path, servers: list) -> None:
    server = servers[1]
    os.kill(gcs_pids(data)[0], signal.SIGKILL)
    wait_for("readyz to report Ray down", lambda: server.api.get("/readyz").status_code == 503, 60)
    ready = server.api.get("/readyz").json()
    assert ready["status"] == "not ready" and ready["ray"] == "down"
    assert server.api.get("/healthz").status_code == 200
    refused = server.api.post("/v1/jobs", json=job())
    assert refused.status_code == 503 and "Ray" in refused.json()["detail"], refused.text
