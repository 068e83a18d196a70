"""Training jobs through the API on a real embedded Ray: accuracy, SSE, cancel, timeout, worker
kill, limits and bad input. One Ray for the whole module (its start costs seconds)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import settings
from app.examples import DIGITS_CNN, DIGITS_MLP, digits_job
from app.main import app

TERMINAL = ("succeeded", "failed", "cancelled")
CNN = DIGITS_CNN


def job(model: dict = DIGITS_MLP, **extra: object) -> dict:
    return digits_job(model, **{"epochs": 2, "device": "cpu", **extra})


LONG = job(epochs=100, batch_size=1)  # ~140k steps: minutes, unless stopped


def wait(api: TestClient, job_id: str, done: Callable[[dict], bool], timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = api.get(f"/v1/jobs/{job_id}").json()
        if done(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {current['status']} after {timeout_s} s: {current}")


def finished(current: dict) -> bool:
    return current["status"] in TERMINAL


def running(current: dict) -> bool:
    return current["status"] != "queued"


def submit(api: TestClient, body: dict) -> str:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()["id"]


def cancel(api: TestClient, job_id: str) -> httpx.Response:
    return api.post(f"/v1/jobs/{job_id}/cancel")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_small_cnn_learns_the_digits(api: TestClient) -> None:
    response = api.post("/v1/train", json=job(CNN, epochs=6, optimizer={"type": "Adam", "lr": 0.003}))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "succeeded", result["error"]
    assert result["metrics"]["val_accuracy"] >= 0.9, result["history"]
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5, 6]
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["metrics"] == {
        k: result["history"][-1][k] for k in ("train_loss", "val_loss", "val_accuracy", "outputs")
    }
    assert result["device"] == "cpu" and result["error"] is None
    assert result["node"]["node_id"] and result["node"]["ip"] and result["node"]["pid"] != os.getpid()
    assert result["created_at"] <= result["started_at"] <= result["finished_at"]
    assert result["duration_s"] > 0 and result["memory_estimate_bytes"] > 0
    memory = result["memory"]
    assert memory["estimated_bytes"] == result["memory_estimate_bytes"] > memory["measured_peak_bytes"] > 0
    assert result["request"]["model"] == json.loads(json.dumps(result["request"]["model"]))
    assert api.get(f"/v1/jobs/{result['id']}").json() == result


def test_a_job_over_its_memory_allowance_fails_and_the_worker_carries_on(
    api: TestClient, monkeypatch
) -> None:
    # No headroom over the estimate: the worker's own growth (data, torch's allocator) lies past it.
    monkeypatch.setattr(settings, "job_memory_factor", 1.0)
    monkeypatch.setattr(settings, "job_memory_slack_bytes", 0)
    failed = api.post("/v1/train", json=job()).json()
    assert failed["status"] == "failed", failed
    assert failed["error"].startswith("out of memory: the job went over its memory allowance"), failed[
        "error"
    ]
    monkeypatch.undo()
    assert api.post("/v1/train", json=job()).json()["status"] == "succeeded"


def test_same_seed_same_device_same_history(api: TestClient) -> None:
    first = api.post("/v1/train", json=job(seed=7)).json()
    again = api.post("/v1/train", json=job(seed=7)).json()
    assert first["status"] == again["status"] == "succeeded"
    assert first["history"] == again["history"] and first["id"] != again["id"]


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(
                {"event": fields.get("event"), "id": fields.get("id"), "data": json.loads(fields["data"])}
            )
    return events


def test_events_stream_progress_then_the_finished_job(api: TestClient) -> None:
    job_id = submit(api, job(epochs=3, batch_size=16))  # 90 steps an epoch: progress at 50, 100, ...
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and events[-1]["data"]["status"] == "succeeded"
    epochs = [e["data"] for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs == events[-1]["data"]["history"]
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert [p["step"] for p in progress] == [50, 100, 150, 200, 250]
    assert all(set(p) == {"epoch", "step", "steps_total", "loss"} for p in progress)
    assert [int(e["id"]) for e in events[:-1]] == list(range(1, len(events)))
    # A reconnecting client (Last-Event-ID) gets only what it missed.
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "3"}) as response:
        resumed = parse_sse(response.read().decode())
    assert resumed[0]["id"] == "4" and resumed[:-1] == events[3:-1]


def test_list_jobs_newest_first_paginated(api: TestClient) -> None:
    ids = [submit(api, job(epochs=1)) for _ in range(3)]
    for job_id in ids:
        wait(api, job_id, finished)
    page = api.get("/v1/jobs", params={"limit": 2}).json()
    assert page["count"] >= 3 and [j["id"] for j in page["data"]] == ids[::-1][:2]
    assert all(j["request"] is None for j in page["data"])
    assert api.get("/v1/jobs", params={"offset": 2, "limit": 1}).json()["data"][0]["id"] == ids[0]
    assert api.get("/v1/jobs", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize("path", ["/v1/jobs/nope", "/v1/jobs/nope/events"])
def test_unknown_job_is_404(api: TestClient, path: str) -> None:
    assert api.get(path).status_code == 404
    assert api.delete("/v1/jobs/nope").status_code == 404
    assert api.post("/v1/jobs/nope/cancel").status_code == 404


HUGE = {
    "layers": [
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 1 << 20},
        {"type": "Linear", "out_features": 4096},
    ]
}

# (what is wrong, body changes, where the 422 points)
BAD = [
    ("unknown layer", {"model": {"layers": [{"type": "Conv9d"}]}}, ["body", "model", "layers", 0]),
    (
        "shape mismatch",
        {
            "model": {
                "layers": [{"type": "Flatten"}, {"type": "Linear", "in_features": 100, "out_features": 10}]
            }
        },
        ["body", "model", "layers", 1, "in_features"],
    ),
    (
        "too few classes",
        {"model": {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 5}]}},
        ["body", "model", "layers", 1],
    ),
    ("too much memory", {"model": HUGE}, ["body", "model"]),
    # no parameters: nothing to train (torch's optimizer refuses an empty parameter list)
    ("nothing to train", {"model": {"layers": [{"type": "ReLU"}]}}, ["body", "model"]),
    (
        "every parameter frozen",
        {
            "model": {
                "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10, "trainable": False}]
            }
        },
        ["body", "model"],
    ),
    (
        "token ids past the vocabulary",
        {
            "model": {
                "layers": [
                    {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 4},
                    {"type": "Flatten"},
                    {"type": "Linear", "out_features": 10},
                ]
            },
            "dataset": {"name": "synthetic", "shape": [6], "dtype": "int64", "vocab_size": 50},
        },
        ["body", "model", "layers", 0, "num_embeddings"],
    ),
    (
        "token ids into a Linear",
        {"dataset": {"name": "synthetic", "shape": [6], "dtype": "int64"}},
        ["body", "model", "layers", 1],
    ),
    ("unknown dataset", {"dataset": {"name": "mnist"}}, ["body", "dataset"]),
    (
        "ragged inline x",
        {"dataset": {"name": "inline", "x": [[1, 2], [3]], "y": [0, 1]}},
        ["body", "dataset", "x"],
    ),
    (
        "synthetic too big",
        {"dataset": {"name": "synthetic", "shape": [1024, 1024], "samples": 1000}},
        ["body", "dataset", "samples"],
    ),
    ("unknown loss", {"loss": {"type": "HingeLoss"}}, ["body", "loss"]),
    ("regression loss on labels", {"loss": {"type": "MSELoss"}}, ["body", "loss", "type"]),
    ("bad loss argument", {"loss": {"type": "CrossEntropyLoss", "label_smoothing": 2}}, ["body", "loss"]),
    ("unknown optimizer", {"optimizer": {"type": "LBFGS"}}, ["body", "optimizer"]),
    ("negative lr", {"optimizer": {"type": "SGD", "lr": -1}}, ["body", "optimizer"]),
    ("zero epochs", {"epochs": 0}, ["body", "epochs"]),
    ("too many epochs", {"epochs": settings.max_epochs + 1}, ["body", "epochs"]),
    ("too many steps", {"epochs": 200, "batch_size": 1}, ["body", "epochs"]),
    ("batch too large", {"batch_size": settings.max_batch_size + 1}, ["body", "batch_size"]),
    ("negative seed", {"seed": -1}, ["body", "seed"]),
    ("unknown device", {"device": "tpu"}, ["body", "device"]),
    (
        "time limit past the server's",
        {"time_limit_s": settings.max_job_seconds + 1},
        ["body", "time_limit_s"],
    ),
    ("unknown field", {"learning_rate": 0.1}, ["body", "learning_rate"]),
]


@pytest.mark.parametrize("what,change,loc", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/train"])
def test_bad_jobs_are_refused_before_queueing(
    api: TestClient, path: str, what: str, change: dict, loc: list
) -> None:
    before = api.get("/v1/jobs").json()["count"]
    response = api.post(path, json={**job(), **change})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc for e in errors), errors
    assert all(e["msg"] for e in errors)
    assert api.get("/v1/jobs").json()["count"] == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_cuda_auto_trains_on_cpu_and_cuda_is_refused_at_once(api: TestClient) -> None:
    result = api.post("/v1/train", json=job(epochs=1, device="auto")).json()
    assert result["status"] == "succeeded" and result["device"] == "cpu"
    response = api.post("/v1/jobs", json=job(device="cuda"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "device"]
    assert "no GPU" in response.json()["detail"][0]["msg"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_with_cuda_the_job_trains_on_the_gpu(api: TestClient, device: str) -> None:
    result = api.post("/v1/train", json=job(CNN, epochs=3, device=device)).json()
    assert result["status"] == "succeeded", result["error"]
    assert result["device"].startswith("cuda")


# Stopping workers last: each stopped worker costs the next job a fresh worker process.
def test_cancel_stops_a_running_job(api: TestClient) -> None:
    job_id = submit(api, LONG)
    try:
        started = wait(api, job_id, running)
        assert started["status"] == "running" and started["device"] == "cpu"
        pid = started["node"]["pid"]
        assert api.delete(f"/v1/jobs/{job_id}").status_code == 409  # active: cancel first
        response = cancel(api, job_id)
        assert response.status_code == 202 and response.json()["status"] == "cancelled"
        deadline = time.monotonic() + 30  # "at once", with room for a loaded machine
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), "the worker still runs after its job was cancelled"
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert cancel(api, job_id).status_code == 409
    finally:
        cancel(api, job_id)


def test_of_two_concurrent_cancels_one_wins(api: TestClient) -> None:
    job_id = submit(api, LONG)
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: cancel(api, job_id).status_code, range(2)))
    assert codes == [202, 409]


def test_delete_removes_a_finished_job_with_its_events_and_files(api: TestClient) -> None:
    result = api.post("/v1/train", json=job(epochs=1)).json()
    job_id = result["id"]
    files = settings.data_dir / "jobs" / job_id
    files.mkdir(parents=True, exist_ok=True)
    (files / "model.safetensors").write_bytes(b"weights")
    assert app.state.jobs.store.events_after(job_id, 0)
    response = api.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 204 and response.content == b""
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
        assert api.get(path).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert cancel(api, job_id).status_code == 404
    assert not files.exists() and app.state.jobs.store.events_after(job_id, 0) == []
    assert job_id not in [j["id"] for j in api.get("/v1/jobs", params={"limit": 100}).json()["data"]]


def test_a_job_past_its_time_limit_fails_with_a_timeout(api: TestClient) -> None:
    job_id = submit(api, {**LONG, "time_limit_s": 1})
    result = wait(api, job_id, finished)
    assert result["status"] == "failed" and result["error"].startswith("timed out"), result["error"]
    assert "1 s limit" in result["error"]


def test_beyond_the_queue_limit_is_429_with_retry_after(api: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(settings, "max_queued_jobs", 1)
    job_id = submit(api, LONG)
    try:
        response = api.post("/v1/jobs", json=job())
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) > 0
    finally:
        cancel(api, job_id)


def test_train_answers_202_with_the_running_job_when_its_wait_ends(api: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(settings, "train_wait_seconds", 0.5)
    response = api.post("/v1/train", json=LONG)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["status"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert cancel(api, job_id).json()["status"] == "cancelled"
