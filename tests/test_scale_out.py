"""Scale-out on a real Ray cluster: separate ``ray start`` nodes on loopback, the API joined to
them by ``RAY_ADDRESS``, as in the README's recipe (scripts/ray_cluster.sh).

The head has no CPUs, so a job can only run on a worker node; the job reports that node. Killing
the only worker node mid-job (every process of it, as a crashed machine) leaves the job's actor
nowhere to restart: the job fails with a clear reason while the API stays up, and a worker node
that joins later runs the next job.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import ROOT, START_S, clean_env, free_port, uvicorn_command, wait_for

from app.examples import DIGITS_MLP, digits_job

SCRIPT = ROOT / "scripts" / "ray_cluster.sh"
RAY = Path(sys.executable).parent / "ray"
KEY = "scale-out-test-key"
HEAD_IP, WORKER_IP, SECOND_WORKER_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
TERMINAL = ("succeeded", "failed", "cancelled")
QUEUE_S = 45  # how long a job may wait for a node (its first start on a busy machine takes ~15 s)


def mlp_job(epochs: int, batch_size: int = 64) -> dict:
    optimizer = {"type": "Adam", "lr": 0.01}
    return digits_job(DIGITS_MLP, optimizer=optimizer, epochs=epochs, batch_size=batch_size, device="cpu")


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    address: str
    api: httpx.Client
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a process in its own session, so that killing its group kills it all."""
        with open(self.tmp / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, ip: str) -> subprocess.Popen:
        return self.start(name, ["bash", str(SCRIPT), "worker", self.address], {**self.env, "WORKER_IP": ip})

    def kill(self, name: str) -> None:
        """SIGKILL every process of a node at once: the node crashes, nothing shuts down cleanly."""
        proc = self.procs.pop(name)
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def run(self, body: dict, timeout_s: float = START_S) -> dict:
        response = self.api.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        return self.wait_job(response.json()["id"], lambda job: job["status"] in TERMINAL, timeout_s)

    def wait_job(self, job_id: str, done: Callable[[dict], bool], timeout_s: float = START_S) -> dict:
        def check() -> dict | None:
            job = self.api.get(f"/v1/jobs/{job_id}").json()
            return job if done(job) else None

        # The API must stay up: a transport error fails at once.
        return wait_for(f"job {job_id}", check, timeout_s, 0.5, ignore=())  # type: ignore[return-value]


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group)."""
    table = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue
    return table


def descendants(leader: int) -> set[int]:
    """The processes of ``leader``'s group and all their descendants (Ray's workers are group
    leaders of their own, started by the raylet)."""
    table = _processes()
    found = {pid for pid, (_, group) in table.items() if group == leader} | {leader}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def _ray_healthy(address: str, env: dict[str, str]) -> bool:
    args = [str(RAY), "health-check", "--address", address]
    return subprocess.run(args, env=env, capture_output=True, timeout=60, check=False).returncode == 0


def _api_ready(api: httpx.Client) -> bool:
    try:
        return api.get("/readyz").json().get("ray") == "up"
    except httpx.TransportError:
        return False


def _kill_leftovers(tmp: Path) -> None:
    """Kill, by pid, any process still naming this test's Ray temp dir (all of them are ours)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(tmp).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # A short temp dir: Ray's unix socket paths under it must fit in 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="mbray-", dir="/tmp"))
    port, api_port = free_port(), free_port()
    token = secrets.token_hex(16)
    env = clean_env(RAY=str(RAY), RAY_TMPDIR=str(tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    address = f"{HEAD_IP}:{port}"
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"X-API-Key": KEY}, timeout=30)
    c = Cluster(tmp, env, address, api)
    try:
        c.start("head", ["bash", str(SCRIPT), "head", str(port)])
        wait_for("the Ray head", lambda: _ray_healthy(address, env), every_s=0.5)
        c.start_worker("worker", WORKER_IP)
        api_env = {
            **env,
            "RAY_ADDRESS": address,
            "MB_DATA_DIR": str(tmp / "data"),
            "MB_API_KEYS": f'["{KEY}"]',
            "MB_MAX_QUEUE_SECONDS": str(QUEUE_S),
        }
        c.start("api", uvicorn_command(api_port), api_env)
        try:
            wait_for("the API joined to Ray", lambda: _api_ready(api), every_s=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- api log ---\n{c.log('api')}") from None
        yield c
    finally:
        api.close()
        if "api" in c.procs:  # a clean shutdown first: the API closes its store and Ray
            c.procs["api"].send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.procs["api"].wait(timeout=20)
        for name in list(c.procs):
            c.kill(name)
        _kill_leftovers(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_api_is_locked_and_joined_to_the_cluster(cluster: Cluster) -> None:
    assert httpx.get(cluster.api.base_url.join("/v1/jobs"), timeout=10).status_code == 401
    assert cluster.api.get("/v1/jobs").status_code == 200
    ready = cluster.api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ray"] == "up"


def test_jobs_run_on_the_worker_node(cluster: Cluster) -> None:
    job = cluster.run(mlp_job(epochs=3))
    assert job["status"] == "succeeded", job["error"]
    assert job["node"]["ip"] == WORKER_IP  # the head has no CPUs: the job ran on the worker
    # The job's actor ends with its job (the API ends it once it has stored the result; the
    # process exits a moment later, longer on a loaded machine).
    actor, worker = job["node"]["pid"], cluster.procs["worker"].pid
    wait_for("the job's actor to exit", lambda: actor not in descendants(worker), 60, 0.5)
    assert len(job["history"]) == 3 and job["metrics"]["val_accuracy"] > 0.8
    # Its weights came back from the worker node through Ray, into the API's MB_DATA_DIR.
    response = cluster.api.get(job["weights"]["url"])
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == job["weights"]["sha256"]
    stored = cluster.tmp / "data" / "jobs" / job["id"] / "model.safetensors"
    assert stored.read_bytes() == response.content
    header_size = int.from_bytes(response.content[:8], "little")  # safetensors: u64 size, JSON header
    assert json.loads(response.content[8 : 8 + header_size])["__metadata__"]["job_id"] == job["id"]


def test_a_50_mb_uploaded_dataset_trains_on_the_worker_node(cluster: Cluster) -> None:
    """The worker reads the file from MB_DATA_DIR, the volume the nodes share (here: one machine)."""
    g = np.random.default_rng(0)
    x = g.standard_normal((49_152, 256), dtype=np.float32)  # 50.3 MB of inputs
    y = (x @ g.standard_normal((256, 10), dtype=np.float32)).argmax(axis=1)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    uploaded = cluster.api.post("/v1/datasets", files={"file": ("big.npz", buffer.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["size_bytes"] > 50_000_000
    model = {"layers": [{"type": "Linear", "out_features": 10}]}
    body = {
        **mlp_job(epochs=1, batch_size=512),
        "model": model,
        "dataset": {"id": uploaded.json()["id"], "inputs": "x", "targets": "y"},
    }
    job = cluster.run(body)
    assert job["status"] == "succeeded", job["error"]
    assert job["node"]["ip"] == WORKER_IP and job["metrics"]["val_accuracy"] > 0.7


def test_killing_the_only_worker_node_mid_job_fails_the_job_and_the_api_carries_on(cluster: Cluster) -> None:
    """Ray restarts the job's actor elsewhere, but no node has room: after MB_MAX_QUEUE_SECONDS
    of waiting the reaper fails the job (and kills the actor, so it cannot take a later node)."""
    response = cluster.api.post("/v1/jobs", json=mlp_job(epochs=200, batch_size=4))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    running = cluster.wait_job(job_id, lambda job: job["status"] == "running" and job["progress"])
    assert running["node"]["ip"] == WORKER_IP
    # The training process is one of the worker node's processes (started by its raylet).
    assert running["node"]["pid"] in descendants(cluster.procs["worker"].pid)
    assert running["node"]["pid"] not in descendants(cluster.procs["head"].pid)

    cluster.kill("worker")
    failed = cluster.wait_job(job_id, lambda job: job["status"] in TERMINAL, START_S + QUEUE_S)
    assert failed["status"] == "failed"
    assert "worker died and was not restarted" in failed["error"], failed["error"]
    assert cluster.api.get("/healthz").status_code == 200
    assert cluster.api.get("/readyz").json()["ray"] == "up"  # the head is still there

    # A worker node that joins later takes the next job.
    cluster.start_worker("worker2", SECOND_WORKER_IP)
    job = cluster.run(mlp_job(epochs=2))
    assert job["status"] == "succeeded", job["error"]
    assert job["node"]["ip"] == SECOND_WORKER_IP
