"""Job bodies refused before anything is queued, at the element or field at fault, and the
``Last-Event-ID`` header parsed strictly. A real engine and store without Ray: each refusal
comes from the planner, before a job would reach Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs.domain import JobStatus, Progress
from app.jobs.engine import JobEngine
from app.jobs.store import JobStore
from app.main import app

MLP = {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 3}]}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    saved, app.state.jobs = getattr(app.state, "jobs", None), JobEngine(JobStore(tmp_path))
    try:
        yield TestClient(app)
    finally:
        app.state.jobs.store.close()
        app.state.jobs = saved


def job(dataset: dict, **extra: object) -> dict:
    return {
        "model": MLP,
        "dataset": dataset,
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.1},
        **extra,
    }


def refusal(api: TestClient, body: dict) -> dict:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text[:400]
    [error] = response.json()["detail"]
    return error


def test_two_samples_at_the_default_batch_size_are_refused_at_batch_size(api: TestClient) -> None:
    """1 sample is held out for validation, and a lone training sample is skipped when batch_size > 1:
    it trained nothing and failed with a ZeroDivisionError."""
    error = refusal(api, job({"name": "synthetic", "shape": [4], "samples": 2, "num_classes": 3}))
    assert error["loc"] == ["body", "batch_size"] and "batch_size 1" in error["msg"]


@pytest.mark.parametrize(
    ("dataset", "loc"),
    [
        ({"name": "inline", "x": [[1.0], [2.0], [3.0]], "y": [0, 2**70, 1]}, ["y", 1]),  # wrapped in y.long()
        ({"name": "inline", "x": [[1.0], [2.0]], "y": [0, -1]}, ["y", 1]),
        ({"name": "inline", "x": [[1.0], [2.0]], "y": [0.5, 1]}, ["y", 0]),
        (
            {"name": "inline", "x": [[1, 2], [3, 1.5]], "y": [0, 1], "dtype": "int64"},
            ["x", 1, 1],
        ),  # truncated
        ({"name": "inline", "x": [[1], [2**70]], "y": [0, 1], "dtype": "int64"}, ["x", 1, 0]),
    ],
    ids=["label 2**70", "negative label", "fractional label", "int64 x of 1.5", "int64 x of 2**70"],
)
def test_inline_values_that_do_not_fit_are_refused_at_the_element(
    api: TestClient, dataset: dict, loc: list
) -> None:
    model = {"layers": [{"type": "Embedding", "num_embeddings": 8, "embedding_dim": 2}, *MLP["layers"]]}
    body = job(dataset, model=model) if dataset.get("dtype") == "int64" else job(dataset)
    error = refusal(api, body)
    assert error["loc"] == ["body", "dataset", *loc], error


def test_last_event_id_is_parsed_strictly(api: TestClient) -> None:
    store: JobStore = app.state.jobs.store
    store.create("j1", {}, 1)
    store.record_progress("j1", Progress(epoch=1, step=1, steps_total=2, loss=1.0))
    store.record_progress("j1", Progress(epoch=1, step=2, steps_total=2, loss=0.5))
    store.finish("j1", JobStatus.CANCELLED, "cancelled by request")
    for bad in ("99999999999999999999", "\xb2", "-1", "1 ", "٣"):  # too big, raw byte, sign, space, Arabic 3
        response = api.get("/v1/jobs/j1/events", headers={"Last-Event-ID": bad.encode("latin-1", "replace")})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
    resumed = api.get("/v1/jobs/j1/events", headers={"Last-Event-ID": "1"}).text
    assert "id: 2" in resumed and "id: 1\n" not in resumed and "event: done" in resumed
