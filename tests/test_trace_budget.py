"""The trace budget holds inside one layer, job plans trace under the same slots and budget, a
trace stops when its client leaves, and FLOPs torch cannot count are listed, not hidden."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.analysis import summarize
from app.api.routes import jobs as job_routes
from app.core import traces
from app.core.config import settings
from app.jobs.engine import JobEngine
from app.jobs.plan import JobPlan
from app.jobs.store import JobStore
from app.main import app
from app.schemas.jobs import JobCreate
from layers import ModelSpec

# One meta bmm per output feature inside a single aten::_trilinear: about 50 s of CPU unbounded.
HUGE_BILINEAR = {"layers": [{"type": "Bilinear", "out_features": 1048570}]}


def test_the_budget_stops_a_trace_inside_one_layer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "max_trace_seconds", 1.0)
    started = time.thread_time(), time.monotonic()
    response = client.post("/v1/models/summary", json={"model": HUGE_BILINEAR, "input_shape": [1, 1]})
    cpu, wall = time.thread_time() - started[0], time.monotonic() - started[1]
    assert response.status_code == 422, response.text[:300]
    [error] = response.json()["detail"]
    assert error["type"] == "limit_exceeded" and error["loc"] == ["body", "model", "layers", 0]
    assert "more than 1 s of CPU time" in error["msg"] and "in this Bilinear" in error["msg"]
    assert cpu < 3 and wall < 30, (cpu, wall)  # wall: generous for a busy shared machine


def test_a_job_plan_traces_under_a_slot_and_the_budget(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_trace_seconds", 1.0)
    monkeypatch.setattr(settings, "max_concurrent_traces", 1)
    monkeypatch.setattr(traces, "_slots", type(traces._slots)())
    free_slots_while_planning = []
    plan_job = job_routes.plan_job

    def observed(job: JobCreate, cancelled: threading.Event, uploaded: object = None) -> JobPlan:
        free_slots_while_planning.extend(s._value for s in traces._slots.values())
        return plan_job(job, cancelled, uploaded)

    monkeypatch.setattr(job_routes, "plan_job", observed)
    saved = getattr(app.state, "jobs", None)
    app.state.jobs = JobEngine(JobStore(tmp_path))  # the plan fails before anything reaches Ray
    try:
        body = {
            "model": HUGE_BILINEAR,
            "dataset": {"name": "synthetic", "shape": [1], "samples": 8},
            "loss": {"type": "CrossEntropyLoss"},
            "optimizer": {"type": "SGD", "lr": 0.1},
            "batch_size": 1,
        }
        response = TestClient(app).post("/v1/jobs", json=body)
    finally:
        app.state.jobs.store.close()
        app.state.jobs = saved
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"][0]["type"] == "limit_exceeded"
    assert free_slots_while_planning == [0]  # the one slot was taken by the plan


def test_a_trace_stops_when_its_client_disconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_trace_seconds", 600.0)
    body = json.dumps({"model": HUGE_BILINEAR, "input_shape": [1, 1]}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models/summary",
        "raw_path": b"/v1/models/summary",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def request() -> float:
        started = time.monotonic()
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            if time.monotonic() - started < 1.0:
                await asyncio.sleep(3600)  # nothing yet (Starlette polls with a cancelled scope)
            return {"type": "http.disconnect"}  # the client left a second in

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return time.monotonic() - started

    tracing_threads = threading.active_count()
    elapsed = asyncio.run(request())
    assert elapsed < 20, elapsed  # unstopped, this trace runs for about a minute
    assert sent[0]["status"] == 499
    assert threading.active_count() <= tracing_threads + 1  # no trace left running behind


def test_uncounted_operators_are_listed() -> None:
    spec = ModelSpec.model_validate({"layers": [{"type": "Bilinear", "out_features": 4}]})
    summary = summarize(spec, (2, 3))
    assert summary.uncounted_ops == ["aten._trilinear"]  # torch's counter has no formula for it
    linear = summarize(ModelSpec.model_validate({"layers": [{"type": "Linear", "out_features": 4}]}), (2, 3))
    assert linear.uncounted_ops == [] and linear.flops == 2 * 2 * 3 * 4
