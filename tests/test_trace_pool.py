"""The trace pool (app/core/trace_pool.py): budgets, crashes, memory and disconnects bounded from
outside the worker, and the same answers as a trace in the API process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.routes import models
from app.core import trace_pool
from app.core.cache import BytesLRU
from app.core.config import settings
from app.main import app

BILINEAR = {"model": {"layers": [{"type": "Bilinear", "out_features": 1048570}]}, "input_shape": [1, 1]}
SMALL = {"model": {"layers": [{"type": "Linear", "out_features": 4}]}, "input_shape": [2, 3]}
PROCESSES = 3  # one more than the trace slots, so that the slots, not the pool, bound a test


@pytest.fixture(scope="module")
def pool() -> Iterator[trace_pool.TracePool]:
    saved = settings.trace_processes
    settings.trace_processes = PROCESSES
    started = trace_pool.start()
    assert started is not None
    try:
        yield started
    finally:
        trace_pool.stop()
        settings.trace_processes = saved


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=300)


async def summary(http: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await http.post("/v1/models/summary", json=body)


def fresh(body: dict) -> dict:
    """``body`` with a spec no earlier request had (the summary cache answers those)."""
    layers = [{**body["model"]["layers"][0], "name": f"n{os.urandom(4).hex()}"}]
    return {**body, "model": {"layers": layers}}


def test_past_the_budget_is_a_422_the_worker_is_replaced_and_the_next_request_works(pool, monkeypatch):
    monkeypatch.setattr(settings, "max_trace_seconds", 1.0)
    before = set(pool.workers)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with client() as http:
            return await summary(http, fresh(BILINEAR)), await summary(http, fresh(SMALL))

    refused, after = asyncio.run(run())
    assert refused.status_code == 422, refused.text
    (detail,) = refused.json()["detail"]
    assert detail["type"] == "limit_exceeded" and detail["loc"] == ["body", "model"]
    assert "MB_MAX_TRACE_SECONDS" in detail["msg"] and detail["ctx"]["limit_s"] == 1.0
    assert after.status_code == 200, after.text
    assert len(pool.workers) == PROCESSES and pool.workers != before  # one killed, one new


def test_a_worker_killed_mid_trace_is_a_503_and_the_next_request_works(pool, monkeypatch):
    monkeypatch.setattr(settings, "max_trace_seconds", 120.0)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with client() as http:
            request = asyncio.ensure_future(summary(http, fresh(BILINEAR)))
            while not pool.busy():
                await asyncio.sleep(0.02)
            (pid,) = pool.busy()
            os.kill(pid, signal.SIGKILL)  # as a segfault or the OOM killer would
            return await request, await summary(http, fresh(SMALL))

    crashed, after = asyncio.run(run())
    assert crashed.status_code == 503, crashed.text
    (detail,) = crashed.json()["detail"]
    assert detail["type"] == "trace_worker_crashed" and "died" in detail["msg"]
    assert after.status_code == 200, after.text


def test_a_worker_past_its_memory_cap_is_a_422_naming_the_limit(pool, monkeypatch):
    (pid, *_) = pool.workers
    cap = trace_pool._rss_bytes(pid) + (64 << 20)
    monkeypatch.setattr(pool, "memory_bytes", cap)
    big = {  # a 256 MiB embedding, built for real by the ONNX export
        "model": {"layers": [{"type": "Embedding", "num_embeddings": 1 << 16, "embedding_dim": 1024}]},
        "input_shape": [1, 4],
        "input_dtype": "int64",
        "format": "onnx",
    }

    async def run() -> httpx.Response:
        async with client() as http:
            return await http.post("/v1/models/export", json=big)

    refused = asyncio.run(run())
    assert refused.status_code == 422, refused.text
    (detail,) = refused.json()["detail"]
    assert detail["ctx"] == {"limit_bytes": cap} and "MB_TRACE_MEMORY_BYTES" in detail["msg"]


def test_a_client_that_disconnects_frees_its_slot_and_its_worker_is_killed(pool, monkeypatch):
    monkeypatch.setattr(settings, "max_trace_seconds", 120.0)
    monkeypatch.setattr(settings, "max_concurrent_traces", 1)
    body = json.dumps(fresh(BILINEAR)).encode()
    sent: list[dict] = []

    async def run() -> tuple[list[dict], httpx.Response, set[int]]:
        received = asyncio.Event()

        async def receive() -> dict:
            if not received.is_set():
                received.set()
                return {"type": "http.request", "body": body, "more_body": False}
            while not pool.busy():  # the client leaves once its trace has started
                await asyncio.sleep(0.02)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/models/summary",
            "raw_path": b"/v1/models/summary",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        before = set(pool.workers)
        await app(scope, receive, send)
        async with client() as http:  # the only slot is free again
            return sent, await summary(http, fresh(SMALL)), before

    messages, after, before = asyncio.run(run())
    assert messages[0]["status"] == 499
    assert after.status_code == 200, after.text
    assert pool.workers != before  # the abandoned trace's worker was killed and replaced


def test_four_budget_hitting_exports_run_two_at_a_time(pool, monkeypatch):
    monkeypatch.setattr(settings, "max_export_seconds", 1.0)
    monkeypatch.setattr(settings, "max_trace_seconds", 120.0)
    monkeypatch.setattr(settings, "max_concurrent_traces", 2)
    most = 0

    async def run() -> list[httpx.Response]:
        nonlocal most
        async with client() as http:
            exports = [
                asyncio.ensure_future(
                    http.post("/v1/models/export", json={**fresh(BILINEAR), "format": "onnx"})
                )
                for _ in range(4)
            ]
            while not all(e.done() for e in exports):
                most = max(most, len(pool.busy()))
                await asyncio.sleep(0.01)
            return [e.result() for e in exports]

    answers = asyncio.run(run())
    assert [a.status_code for a in answers] == [422] * 4, [a.text for a in answers]
    assert all("MB_MAX_EXPORT_SECONDS" in a.json()["detail"][0]["msg"] for a in answers)
    assert most == 2  # with three workers idle, the two slots hold the other exports back


@pytest.mark.parametrize(
    "body",
    [
        BILINEAR | {"model": {"layers": [{"type": "Bilinear", "out_features": 16}]}},  # a composite
        {
            "model": {"layers": [{"type": "TransformerEncoderLayer", "d_model": 64, "nhead": 4}]},
            "input_shape": [2, 16, 64],
            "training": {"optimizer": {"type": "Adam"}, "device": "cpu"},
        },
        {
            "model": {"layers": [{"type": "LSTM", "hidden_size": 32, "num_layers": 2}]},
            "input_shape": [4, 8, 16],
        },
        {  # a graph: its nodes' classes are made in graph.py, and pickle to the worker by name
            "model": {
                "inputs": {"x": {"shape": [2, 8, 16]}, "mask": {"shape": [2, 8], "dtype": "bool"}},
                "nodes": [
                    {"name": "a", "type": "Linear", "out_features": 16, "input": "x"},
                    {"name": "sum", "type": "Add", "inputs": ["a", "x"]},
                    {
                        "name": "enc",
                        "type": "Repeat",
                        "times": 2,
                        "input": "sum",
                        "src_key_padding_mask": "mask",
                        "layers": [{"type": "TransformerEncoderLayer", "d_model": 16, "nhead": 2}],
                    },
                    {"name": "halves", "type": "Chunk", "chunks": 2, "dim": -1, "input": "enc"},
                ],
                "outputs": {"left": "halves.0", "right": "halves.1"},
            }
        },
    ],
)
def test_a_summary_from_a_worker_is_the_one_traced_in_the_api_process(pool, body, monkeypatch):
    async def run() -> httpx.Response:
        async with client() as http:
            return await summary(http, body)

    monkeypatch.setattr(models, "_cache", BytesLRU(0, 0))  # every request traced
    worker = asyncio.run(run())
    monkeypatch.setattr(trace_pool, "_pool", None)  # in-process, under the per-operator budget
    in_process = TestClient(app).post("/v1/models/summary", json=body)
    assert worker.status_code == in_process.status_code == 200, worker.text
    assert worker.json() == in_process.json()
