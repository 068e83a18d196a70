"""A trained job's model leaves the service: weights (safetensors), Python code, ONNX, predictions.

One digits CNN is trained for the whole module on a real embedded Ray. Its exported file and
weights are loaded in a fresh interpreter that imports only torch, safetensors and scikit-learn,
which reproduces the job's validation split in plain code and must find the job's accuracy.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from sklearn.datasets import load_digits

from app.core.config import settings
from app.core.security import APILock
from app.examples import DIGITS_CNN, DIGITS_MLP, digits_job
from app.jobs.retention import job_dir
from app.jobs.trained import MODELS
from app.jobs.warm_pool import payload_path
from app.jobs.weights import WEIGHTS_FILE
from app.main import app
from layers import ModelSpec
from layers.analysis.trace import trace_model

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def job(api: TestClient) -> dict:
    """The digits CNN, trained once (3 epochs, CPU)."""
    response = api.post("/v1/train", json=digits_job(DIGITS_CNN, epochs=3, device="cpu"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "succeeded", result["error"]
    return result


def validation_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits validation split as layers/training/datasets.py makes it (val_fraction 0.2, seed 0)."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target)
    n = x.shape[0]
    n_val = min(max(1, round(n * 0.2)), n - 1)
    val = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_val]
    return x[val], y[val]


def test_the_job_says_it_has_weights_and_serves_them(api: TestClient, job: dict) -> None:
    weights = job["weights"]
    assert weights["url"] == f"/v1/jobs/{job['id']}/weights" and weights["size_bytes"] > 0
    response = api.get(weights["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="{job["id"]}.safetensors"' in response.headers["content-disposition"]
    assert len(response.content) == weights["size_bytes"]
    assert hashlib.sha256(response.content).hexdigest() == weights["sha256"]
    assert response.headers["etag"] == f'"{weights["sha256"]}"'
    again = api.get(weights["url"], headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert api.get(f"/v1/jobs/{job['id']}").json()["weights"] == weights
    assert any(j["weights"] == weights for j in api.get("/v1/jobs").json()["data"])


def test_the_weights_download_takes_ranges(api: TestClient, job: dict) -> None:
    """The weights are served from the file opened before the answer starts, as Starlette's
    FileResponse serves a path: one range, or several."""
    whole = api.get(job["weights"]["url"]).content
    part = api.get(job["weights"]["url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    parts = api.get(job["weights"]["url"], headers={"Range": "bytes=0-9, 20-29"})
    assert parts.status_code == 206 and whole[:10] in parts.content and whole[20:30] in parts.content


@pytest.mark.parametrize(
    ("header", "status", "says"),
    [
        ("pages=1-2", 400, "bytes"),
        ("bytes=9-1", 400, "start must be less than end"),
        ("bytes=10**9-", 400, ""),
        ("bytes=999999999-", 416, "not within the file"),
    ],
    ids=["unit", "backwards", "not a number", "past the end"],
)
def test_a_range_that_cannot_be_served_is_a_4xx_at_the_header(
    api: TestClient, job: dict, header: str, status: int, says: str
) -> None:
    """Starlette answered these in plain text, outside the API's error format."""
    response = api.get(job["weights"]["url"], headers={"Range": header})
    assert response.status_code == status, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["header", "range"] and says in error["msg"], error


def test_the_weights_file_holds_the_module_state_and_its_provenance(
    api: TestClient, job: dict, tmp_path: Path
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(api.get(job["weights"]["url"]).content)
    with safe_open(path, framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    with torch.device("meta"):
        reference = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 4 * 4, 10),
        )
    assert keys == set(reference.state_dict())
    assert metadata["job_id"] == job["id"]
    assert metadata["torch_version"] == torch.__version__
    spec = json.loads(metadata["spec"])
    assert spec["layers"][0] == {
        **DIGITS_CNN["layers"][0],
        "in_channels": 1,
        "stride": 1,
        "dilation": 1,
        "groups": 1,
        "bias": True,
        "name": None,
    }
    assert metadata["spec"] == json.dumps(spec, sort_keys=True, separators=(",", ":"))  # canonical


FRESH = textwrap.dedent(
    """
    import runpy, sys
    import torch
    from safetensors.torch import load_file
    from sklearn.datasets import load_digits

    model = runpy.run_path("model.py")["build_model"]()
    model.load_state_dict(load_file("model.safetensors"), strict=True)
    model.eval()
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target)
    n = x.shape[0]
    n_val = min(max(1, round(n * 0.2)), n - 1)
    val = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_val]
    x_val, y_val = x[val], y[val]
    correct = 0
    with torch.no_grad():
        for i in range(0, n_val, 64):  # in the job's batches, as its validation ran
            correct += int((model(x_val[i : i + 64]).argmax(1) == y_val[i : i + 64]).sum())
    ours = [m for m in sys.modules if m.split(".")[0] in ("app", "layers")]
    print(correct / n_val, ours)
    """
)


def test_a_frozen_layer_comes_out_of_a_job_as_the_seed_made_it(api: TestClient) -> None:
    """``trainable: false`` on the first Linear: its weights download bit for bit as the job's
    seed initialised them; the layer after it trained."""
    model = copy.deepcopy(DIGITS_MLP)
    model["layers"][1]["trainable"] = False
    result = api.post("/v1/train", json=digits_job(model, epochs=1, device="cpu")).json()
    assert result["status"] == "succeeded", result["error"]
    trained = safetensors_load(api.get(result["weights"]["url"]).content)
    torch.manual_seed(0)  # the job's seed, set just before it builds the model
    initial = trace_model(ModelSpec.model_validate(model), (1, 64)).spec.build().state_dict()
    assert set(trained) == set(initial)
    for name in ("1.weight", "1.bias"):
        assert torch.equal(trained[name], initial[name]), name
    assert not torch.equal(trained["3.weight"], initial["3.weight"])


def test_the_exported_code_and_weights_reproduce_the_accuracy_without_this_project(
    api: TestClient, job: dict, tmp_path: Path
) -> None:
    code = api.get(f"/v1/jobs/{job['id']}/export", params={"format": "pytorch"})
    assert code.status_code == 200, code.text
    assert code.headers["content-type"].startswith("text/x-python")
    (tmp_path / "model.py").write_text(code.text)
    (tmp_path / "model.safetensors").write_bytes(api.get(job["weights"]["url"]).content)
    (tmp_path / "check.py").write_text(FRESH)
    # -I: isolated (no PYTHONPATH, no current directory on sys.path, so this project is not importable
    # from its source tree); -P is implied. The script reads its files from its working directory.
    done = subprocess.run(
        [sys.executable, "-I", "check.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    accuracy, ours = done.stdout.split(maxsplit=1)
    assert float(accuracy) == job["metrics"]["val_accuracy"]
    assert ours.strip() == "[]"
    script = subprocess.run(
        [sys.executable, "-I", "model.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert script.returncode == 0, script.stderr
    assert "-> output [64, 10]" in script.stdout and "Conv2d(1, 16" in script.stdout


def test_onnx_with_the_trained_weights_predicts_like_torch(api: TestClient, job: dict) -> None:
    response = api.get(f"/v1/jobs/{job['id']}/export", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    assert f'filename="{job["id"]}.onnx"' in response.headers["content-disposition"]
    proto = onnx.load_from_string(response.content)
    onnx.checker.check_model(proto)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    x, y = validation_split()
    logits = session.run(None, {"input": x.numpy()})[0]  # the whole split at once: the batch is dynamic
    accuracy = float((logits.argmax(1) == y.numpy()).mean())
    assert accuracy == pytest.approx(job["metrics"]["val_accuracy"], abs=1e-9)
    predicted = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": x.tolist()}).json()
    np.testing.assert_allclose(logits, np.array(predicted["outputs"]), atol=1e-4)
    assert logits.argmax(1).tolist() == predicted["predictions"]


def test_predict_reproduces_the_validation_accuracy(api: TestClient, job: dict) -> None:
    x, y = validation_split()
    response = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["output_shape"] == [x.shape[0], 10]
    accuracy = sum(p == t for p, t in zip(answer["predictions"], y.tolist(), strict=True)) / len(y)
    assert accuracy == job["metrics"]["val_accuracy"]
    probabilities = np.array(answer["probabilities"])
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    assert probabilities.argmax(1).tolist() == answer["predictions"]

    one = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": x[0].tolist()}).json()
    assert one["output_shape"] == [10] and one["predictions"] == answer["predictions"][0]
    np.testing.assert_allclose(one["outputs"], answer["outputs"][0], atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([[0.0] * 8] * 8, "[1, 8, 8]"),  # a sample without its channel
        ([[[[0.0] * 8] * 8]] * 2 + [[[[0.0] * 7] * 8]], "ragged"),
        ([[[True] * 8] * 8], "only numbers"),
        ([[["a"] * 8] * 8], "only numbers"),
        ([], "[1, 8, 8]"),
    ],
)
def test_bad_inputs_are_a_422_at_inputs(api: TestClient, job: dict, inputs: list, says: str) -> None:
    response = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"][:2] == ["body", "inputs"]  # and the element, for a bad one
    assert says in detail["msg"]


def test_predict_limits(api: TestClient, job: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = validation_split()
    monkeypatch.setattr(settings, "max_predict_samples", 4)
    response = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": x[:5].tolist()})
    assert response.status_code == 422 and "1 to 4" in response.json()["detail"][0]["msg"]
    monkeypatch.setattr(settings, "max_predict_numel", 100)
    response = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": x[:2].tolist()})
    assert response.status_code == 422 and "100" in response.json()["detail"][0]["msg"]


def test_an_unfinished_job_is_409_and_a_cancelled_one_404(api: TestClient, job: dict) -> None:
    body = digits_job(DIGITS_CNN, epochs=100, batch_size=1, device="cpu")
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    for path in ("weights", "export", "predict"):
        method = api.post if path == "predict" else api.get
        extra = {"json": {"inputs": [1]}} if path == "predict" else {}
        response = method(f"/v1/jobs/{job_id}/{path}", **extra)
        assert response.status_code == 409, response.text
        assert "once it has succeeded" in response.json()["detail"]
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    deadline = time.monotonic() + 30
    while api.get(f"/v1/jobs/{job_id}").json()["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
    response = api.get(f"/v1/jobs/{job_id}/weights")
    assert response.status_code == 404 and "cancelled" in response.json()["detail"]
    assert api.get(f"/v1/jobs/{job_id}").json()["weights"] is None
    assert api.get("/v1/jobs/nope/weights").status_code == 404


def test_weights_the_api_cannot_store_fail_the_job_with_the_reason(api: TestClient) -> None:
    """The run succeeds on the worker, but the API cannot write its weights (here the file's
    place is taken by a directory): the job fails, saying so, and keeps no half-written file."""
    job_id = api.post("/v1/jobs", json=digits_job(DIGITS_MLP, epochs=1, device="cpu")).json()["id"]
    (job_dir(job_id) / WEIGHTS_FILE).mkdir(parents=True)
    deadline = time.monotonic() + 120
    while (done := api.get(f"/v1/jobs/{job_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, done
        time.sleep(0.2)
    assert done["status"] == "failed" and done["weights"] is None
    assert done["error"].startswith("the trained weights could not be stored under MB_DATA_DIR: "), done
    assert "IsADirectoryError" in done["error"]
    kept = {
        "checkpoint",
        payload_path(settings.data_dir, job_id).name,
    }  # a warm actor's job has a payload file
    assert [p.name for p in job_dir(job_id).iterdir() if p.name not in kept] == [WEIGHTS_FILE]


def test_a_job_whose_weights_would_be_too_big_is_refused_up_front(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "max_artifact_bytes", 1000)
    response = api.post("/v1/jobs", json=digits_job(DIGITS_CNN, device="cpu"))
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "model"] and "weights" in detail["msg"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/x/weights"),
        ("GET", "/v1/jobs/x/export?format=onnx"),
        ("POST", "/v1/jobs/x/predict"),
        ("POST", "/v1/models/export"),
    ],
)
def test_a_key_is_required_when_keys_are_set(method: str, path: str) -> None:
    saved, app.state.api_lock = app.state.api_lock, APILock(api_keys=["k"])
    try:
        client = TestClient(app)
        assert client.request(method, path, json={"inputs": [1]}).status_code == 401
        keyed = client.request(method, path, json={"inputs": [1]}, headers={"X-API-Key": "k"})
        assert keyed.status_code != 401
    finally:
        app.state.api_lock = saved


TOKENS_JOB = {
    "model": {
        "layers": [
            {"type": "Embedding", "num_embeddings": 20, "embedding_dim": 4},
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 3},
        ]
    },
    "dataset": {
        "name": "synthetic",
        "shape": [5],
        "dtype": "int64",
        "vocab_size": 20,
        "num_classes": 3,
        "samples": 64,
    },
    "loss": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "SGD", "lr": 0.1},
    "epochs": 1,
    "batch_size": 16,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def token_job(api: TestClient) -> str:
    """A classifier of 5 token ids (vocabulary 20), trained once: its job id."""
    result = api.post("/v1/train", json=TOKENS_JOB).json()
    assert result["status"] == "succeeded", result
    return result["id"]


def test_predict_on_token_ids_and_on_a_regression(api: TestClient, token_job: str) -> None:
    """Token ids are checked against the job's vocabulary; a regression job answers no classes."""
    regression = {
        **TOKENS_JOB,
        "model": {"layers": [{"type": "Linear", "out_features": 2}]},
        "dataset": {"name": "synthetic", "shape": [3], "task": "regression", "targets": 2, "samples": 64},
        "loss": {"type": "MSELoss"},
    }
    result = api.post("/v1/train", json=regression).json()
    assert result["status"] == "succeeded", result
    regression_job = result["id"]

    answer = api.post(
        f"/v1/jobs/{token_job}/predict", json={"inputs": [[1, 2, 3, 4, 19], [0, 0, 0, 0, 0]]}
    ).json()
    assert answer["output_shape"] == [2, 3] and len(answer["predictions"]) == 2
    for bad, says in (([[1, 2, 3, 4, 20]], "0..19"), ([[1, 2, 3, 4, 1.5]], "integer token ids")):
        response = api.post(f"/v1/jobs/{token_job}/predict", json={"inputs": bad})
        assert response.status_code == 422 and says in response.json()["detail"][0]["msg"], response.text

    answer = api.post(f"/v1/jobs/{regression_job}/predict", json={"inputs": [0.5, -1.0, 2.0]}).json()
    assert answer["output_shape"] == [2] and len(answer["outputs"]) == 2
    assert answer["predictions"] is None and answer["probabilities"] is None


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (2**63, "int64"),  # one past the largest int64
        (-(2**63) - 1, "int64"),
        (1e20, "int64"),  # a whole float past int64
        (10**400, "int64"),
        (20, "0..19"),  # an int64, outside the job's vocabulary
        (-1, "0..19"),
        (1.5, "integer token ids"),
        (True, "only numbers"),
    ],
    ids=["2**63", "-2**63-1", "1e20", "10**400", "20", "-1", "1.5", "true"],
)
def test_a_token_id_torch_cannot_take_is_a_422_at_the_element(
    api: TestClient, token_job: str, bad: object, says: str
) -> None:
    """It was a 500 for the first four: torch cannot make an int64 of them."""
    if says == "int64":
        with pytest.raises((RuntimeError, OverflowError, ValueError)):
            torch.tensor([bad], dtype=torch.int64)
    inputs = [[1, 2, 3, 4, 5], [6, 7, bad, 8, 9]]
    response = api.post(f"/v1/jobs/{token_job}/predict", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "inputs", 1, 2], detail
    assert says in detail["msg"] and "inputs[1][2]" in detail["msg"], detail
    one = api.post(f"/v1/jobs/{token_job}/predict", json={"inputs": inputs[1]}).json()["detail"]
    # A flat list holding a boolean is refused by the request's schema, at the field.
    assert one[0]["loc"] == (["body", "inputs"] if bad is True else ["body", "inputs", 2]), one


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (10**400, "float32"),
        (1e300, "float32"),
        (-3.5e38, "float32"),
        (2**128, "float32"),
        ("1", "only numbers"),
    ],
    ids=["10**400", "1e300", "-3.5e38", "2**128", "a string"],
)
def test_a_number_a_float32_cannot_hold_is_a_422_at_the_element(
    api: TestClient, job: dict, bad: object, says: str
) -> None:
    """10**400 was a 500, 1e300 a 200 with null outputs: torch makes it inf (or cannot convert it)."""
    if not isinstance(bad, str):
        with contextlib.suppress(OverflowError, RuntimeError):  # 10**400: torch cannot convert it at all
            assert torch.tensor([bad], dtype=torch.float32).isinf().all()
    batch = validation_split()[0][:2].tolist()
    batch[1][0][3][5] = bad
    response = api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": batch})
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "inputs", 1, 0, 3, 5], detail
    assert says in detail["msg"] and "inputs[1][0][3][5]" in detail["msg"], detail
    largest = float(torch.finfo(torch.float32).max)
    batch[1][0][3][5] = -largest  # the edge itself is a float32
    assert api.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": batch}).status_code == 200


READS = {  # what a client may read of a succeeded job while another one deletes it
    "weights": ("GET", "/weights", {}),
    "code": ("GET", "/export", {"params": {"format": "pytorch"}}),
    "onnx": ("GET", "/export", {"params": {"format": "onnx"}}),
    "predict": ("POST", "/predict", {"json": {"inputs": [[[0.5] * 8] * 8]}}),
}


def _read_until_gone(api: TestClient, job_id: str, kind: str, answers: list, deadline: float) -> None:
    """Read ``kind`` of the job again and again until it answers 404; every answer is kept."""
    method, path, extra = READS[kind]
    while time.monotonic() < deadline:
        try:
            response = api.request(method, f"/v1/jobs/{job_id}{path}", **extra)
        except Exception as e:  # the server failed after its headers: a download cut off
            answers.append((kind, "raised", repr(e)))
            return
        answers.append((kind, response.status_code, response))
        if response.status_code == 404:
            return


def test_reads_racing_a_delete_answer_404_or_everything(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights, exports and predictions of a job being deleted: each a 404 or the whole answer,
    never a 500 nor a download shorter than its Content-Length (both happened). Several jobs,
    many readers each, the DELETE once every kind of read is under way: the race is hit."""
    monkeypatch.setattr(MODELS, "size", 0)  # every predict loads the job's weights file
    body = digits_job(DIGITS_MLP, epochs=1, device="cpu")
    ids = [api.post("/v1/jobs", json=body).json()["id"] for _ in range(4)]
    for i, job_id in enumerate(ids):
        job = wait_for(api, job_id, 300)
        assert job["status"] == "succeeded", job
        answers: list = []
        deadline = time.monotonic() + 120
        # Code and ONNX exports take turns: an ONNX export beside traces in other threads can
        # break them inside torch (a KeyError 'custom', a 422), a defect of its own.
        kinds = ["weights"] * 6 + ["predict"] * 3 + (["code"] * 3 if i % 2 else ["onnx"])
        readers = [
            threading.Thread(target=_read_until_gone, args=(api, job_id, kind, answers, deadline))
            for kind in kinds
        ]
        for reader in readers:
            reader.start()
        while {kind for kind, status, _ in answers if status == 200} != set(kinds):
            assert time.monotonic() < deadline, answers
            time.sleep(0.01)
        deletes = _at_once(3, functools.partial(api.delete, f"/v1/jobs/{job_id}"))  # one wins
        assert sorted(deletes, key=str) == [204, 404, 404], deletes
        for reader in readers:
            reader.join()
        assert {kind for kind, status, _ in answers if status == 404} == set(kinds), answers
        for kind, status, response in answers:
            assert status in (200, 404), (kind, status, response if status == "raised" else response.text)
            if status == 404:
                assert job_id in response.json()["detail"], response.text
            elif kind == "weights":
                size = job["weights"]["size_bytes"]
                assert len(response.content) == int(response.headers["content-length"]) == size
                assert hashlib.sha256(response.content).hexdigest() == job["weights"]["sha256"]


def test_a_read_while_a_delete_is_under_way_says_the_job_is_being_deleted(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-DELETE (its files removed, its row not yet) a read was a 404 saying the job "succeeded
    but kept no weights (it ran before weights were kept)": it says the job is being deleted."""
    trained = api.post("/v1/train", json=digits_job(DIGITS_MLP, epochs=1, device="cpu")).json()
    assert trained["status"] == "succeeded", trained
    store = app.state.jobs.store
    files_gone, release = threading.Event(), threading.Event()
    delete_row = store.delete

    def delete_later(job_id: str) -> bool:  # the DELETE has removed the files: hold it there
        files_gone.set()
        release.wait(60)
        return delete_row(job_id)

    monkeypatch.setattr(store, "delete", delete_later)
    deleting = threading.Thread(target=api.delete, args=(f"/v1/jobs/{trained['id']}",))
    deleting.start()
    try:
        assert files_gone.wait(60)
        assert not job_dir(trained["id"]).exists()
        for kind, (method, path, extra) in READS.items():
            response = api.request(method, f"/v1/jobs/{trained['id']}{path}", **extra)
            assert response.status_code == 404, (kind, response.text)
            assert "being deleted" in response.json()["detail"], (kind, response.text)
    finally:
        release.set()
        deleting.join()
    assert api.get(f"/v1/jobs/{trained['id']}").status_code == 404


def _at_once(n: int, call: Callable[[], httpx.Response]) -> list[int | str]:
    """``call()`` in ``n`` threads at once; their statuses, or what the server raised."""
    answers: list[int | str] = []

    def one() -> None:
        try:
            answers.append(call().status_code)
        except Exception as e:
            answers.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def wait_for(api: TestClient, job_id: str, seconds: float) -> dict:
    """The job once it has finished (or as it is after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while (job := api.get(f"/v1/jobs/{job_id}").json())[
        "status"
    ] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)
    return job
