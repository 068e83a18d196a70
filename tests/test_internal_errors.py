"""Whose fault: the user's mistakes are 4xx naming the field, our bugs are a 500 with an error id
that finds the logged traceback, and no echoed string breaks the error answer itself."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import httpx
import pytest
import servers
from fastapi.testclient import TestClient

from app.jobs.engine import JobEngine
from app.jobs.store import JobStore
from app.main import app
from layers.catalog.linear import LinearSpec

SUMMARY = "/v1/models/summary"
LONE_SURROGATE = "\\ud800"  # a JSON escape: valid JSON, but no UTF-8 can encode it
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "body",
    [
        f'{{"model": {{"layers": [{{"type": "{LONE_SURROGATE}"}}]}}, "input_shape": [1]}}',
        f'{{"model": {{"layers": [{{"type": "ReLU"}}]}}, "input_shape": [1], '
        f'"input_dtype": "{LONE_SURROGATE}"}}',
        f'{{"model": {{"layers": [{{"type": "ReLU", "{LONE_SURROGATE}": 1}}]}}, "input_shape": [1]}}',
        f'{{"model": {{"layers": [{{"type": "ReLU"}}]}}, "input_shape": [1], "{LONE_SURROGATE}": 1}}',
    ],
    ids=["type", "input_dtype", "dict key", "top-level key"],
)
def test_a_lone_surrogate_anywhere_is_a_json_422(client: TestClient, body: str) -> None:
    response = client.post(SUMMARY, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["detail"]
    assert error["loc"][0] == "body" and "surrogate" in error["msg"], error


def test_a_lone_surrogate_in_a_job_is_a_json_422(client: TestClient, tmp_path: Path) -> None:
    body = (
        '{"model": {"layers": [{"type": "Flatten"}]}, "dataset": {"name": "digits"}, '
        f'"loss": {{"type": "{LONE_SURROGATE}"}}, "optimizer": {{"type": "SGD", "lr": 0.1}}}}'
    )
    saved, app.state.jobs = getattr(app.state, "jobs", None), JobEngine(JobStore(tmp_path))  # no Ray needed
    try:
        response = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    finally:
        app.state.jobs.store.close()
        app.state.jobs = saved
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body"


def test_a_bug_in_our_layer_code_is_a_500_with_an_error_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def buggy_infer(self: LinearSpec, shape: tuple[int, ...]) -> LinearSpec:
        return {}["in_features"]  # an injected bug: a KeyError in our own code, not torch's refusal

    monkeypatch.setattr(LinearSpec, "infer", buggy_infer)
    client = TestClient(app, raise_server_exceptions=False)
    body = {"model": {"layers": [{"type": "Linear", "out_features": 2}]}, "input_shape": [1, 3]}
    with caplog.at_level(logging.ERROR, logger="app.core.errors"):
        response = client.post(SUMMARY, json=body)
    assert response.status_code == 500
    [error] = response.json()["detail"]
    assert error["type"] == "internal_error"
    error_id = error["ctx"]["error_id"]
    assert error_id in error["msg"] and "KeyError" not in error["msg"]  # no internals in the answer
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_info and record.exc_info[0] is KeyError  # the traceback is in the log
    assert "while tracing Linear at module path '0'" in "".join(record.exc_info[1].__notes__)


def test_torch_refusing_a_layer_is_still_the_users_422(client: TestClient) -> None:
    body = {
        "model": {"layers": [{"type": "Conv2d", "out_channels": 2, "kernel_size": 9}]},
        "input_shape": [1, 1, 4, 4],
    }
    response = client.post(SUMMARY, json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "shape_mismatch" and error["loc"] == ["body", "model", "layers", 0]


def _raw_request(sock: socket.socket, body: bytes) -> bytes:
    """Send one keep-alive POST of ``body`` to the summary and read its whole answer."""
    head = (
        f"POST {SUMMARY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    headers, _, rest = answer.partition(b"\r\n\r\n")
    length = int(
        next(h for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return headers


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_after_a_500_the_server_says_it_closes_the_connection(
    http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closes a connection after an unhandled error; its answer must say so
    (``Connection: close``), or a pooled client sends its next request into a closed socket."""

    def buggy_infer(self: LinearSpec, shape: tuple[int, ...]) -> LinearSpec:
        raise KeyError("in_features")  # an injected bug of ours

    monkeypatch.setattr(LinearSpec, "infer", buggy_infer)
    good = json.dumps({"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [1, 3]}).encode()
    bad = json.dumps(
        {"model": {"layers": [{"type": "Linear", "out_features": 2}]}, "input_shape": [1, 3]}
    ).encode()
    with servers.serving(app, http) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
            assert b" 200 " in _raw_request(sock, good).split(b"\r\n")[0]
            headers = _raw_request(sock, bad)  # on the same connection, kept alive
            assert b" 500 " in headers.split(b"\r\n")[0]
            assert b"connection: close" in headers.lower(), headers
            assert sock.recv(1) == b""  # and it is closed
        with httpx.Client(base_url=url) as client:  # a pool of keep-alive connections
            for _ in range(5):
                assert client.post(SUMMARY, content=good, headers=JSON).status_code == 200
                response = client.post(SUMMARY, content=bad, headers=JSON)
                assert response.status_code == 500 and response.headers["connection"] == "close"
