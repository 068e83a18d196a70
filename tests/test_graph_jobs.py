"""Graph models as jobs through the API on a real embedded Ray: a two-head graph trains with two
weighted losses (the total is their weighted sum) and predicts per output as torch does with its
weights; its exported code and ONNX reproduce predict; a graph with two inputs trains on an NPZ
of three arrays and predicts on it; and the graph form's bad input, each a 422 at its field."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load
from torch import nn

from app.jobs.plan import plan_job
from app.jobs.train import load_data, train
from app.schemas.jobs import JobCreate
from tests.test_datajobs import digits_arrays
from tests.test_datajobs_api import uploaded
from tests.test_jobs import finished, submit, wait

TWO_HEADS = {
    "inputs": {"x": {"shape": [8, 16]}},
    "nodes": [
        {
            "name": "trunk",
            "type": "Sequential",
            "input": "x",
            "layers": [{"type": "Linear", "out_features": 32}, {"type": "ReLU"}],
        },
        {"name": "cls", "type": "Linear", "out_features": 3, "input": "trunk"},
        {"name": "reg", "type": "Linear", "out_features": 2, "input": "trunk"},
    ],
    "outputs": {"label": "cls", "value": "reg"},
}
LOSSES = {"label": {"type": "CrossEntropyLoss", "weight": 2.0}, "value": {"type": "MSELoss", "weight": 0.5}}
TWO_INPUTS = {  # digits' 64 pixels as two inputs of 32, merged
    "inputs": {"top": {"shape": [8, 32]}, "bottom": {"shape": [8, 32]}},
    "nodes": [
        {"name": "a", "type": "Linear", "out_features": 32, "input": "top"},
        {"name": "b", "type": "Linear", "out_features": 32, "input": "bottom"},
        {"name": "merged", "type": "Add", "inputs": ["a", "b"]},
        {"name": "act", "type": "ReLU", "input": "merged"},
        {"name": "head", "type": "Linear", "out_features": 10, "input": "act"},
    ],
    "outputs": {"logits": "head"},
}


def graph_job(model: dict, dataset: dict, **extra: object) -> dict:
    body = {
        "model": model,
        "dataset": dataset,
        "optimizer": {"type": "Adam", "lr": 0.01},
        "epochs": 2,
        "batch_size": 32,
        "device": "cpu",
    }
    return {**body, **extra}


class TwoHeads(nn.Module):
    """TWO_HEADS by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.cls, self.reg = nn.Linear(32, 3), nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.cls(h), self.reg(h)


@pytest.fixture(scope="module")
def two_heads(api: TestClient) -> dict:
    body = graph_job(TWO_HEADS, {"name": "synthetic", "samples": 256}, losses=LOSSES)
    done = wait(api, submit(api, body), finished)
    assert done["status"] == "succeeded", done
    return done


def test_two_weighted_losses_train_and_the_total_is_their_weighted_sum(two_heads: dict) -> None:
    assert len(two_heads["history"]) == 2
    for entry in [*two_heads["history"], two_heads["metrics"]]:
        label, value = entry["outputs"]["label"], entry["outputs"]["value"]
        assert 0 <= label["val_accuracy"] <= 1 and value["val_accuracy"] is None
        for kind in ("train_loss", "val_loss"):
            assert entry[kind] == pytest.approx(2.0 * label[kind] + 0.5 * value[kind], rel=1e-6)
        assert entry["val_accuracy"] == label["val_accuracy"]
    first, last = (e["outputs"] for e in two_heads["history"])
    assert last["label"]["train_loss"] < first["label"]["train_loss"]
    assert last["value"]["train_loss"] < first["value"]["train_loss"]


def test_predict_answers_per_output_as_torch_does_with_the_weights(api: TestClient, two_heads: dict) -> None:
    reference = TwoHeads().eval()
    reference.load_state_dict(load(api.get(two_heads["weights"]["url"]).content), strict=True)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    answer = api.post(f"/v1/jobs/{two_heads['id']}/predict", json={"inputs": {"x": x.tolist()}})
    assert answer.status_code == 200, answer.text
    label, value = answer.json()["outputs"]["label"], answer.json()["outputs"]["value"]
    with torch.no_grad():
        logits, values = reference(x)
    np.testing.assert_allclose(label["outputs"], logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value["outputs"], values.numpy(), rtol=1e-5, atol=1e-6)
    assert label["predictions"] == logits.argmax(1).tolist() and value.get("predictions") is None
    np.testing.assert_allclose(label["probabilities"], logits.softmax(1).numpy(), rtol=1e-5, atol=1e-6)
    one = api.post(f"/v1/jobs/{two_heads['id']}/predict", json={"inputs": {"x": x[0].tolist()}}).json()
    assert one["outputs"]["label"]["predictions"] == logits[0].argmax().item()
    assert one["outputs"]["value"]["output_shape"] == [2]


def test_exported_code_and_onnx_reproduce_predict(api: TestClient, two_heads: dict) -> None:
    job_id = two_heads["id"]
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    predicted = api.post(f"/v1/jobs/{job_id}/predict", json={"inputs": {"x": x.tolist()}}).json()["outputs"]
    code = api.get(f"/v1/jobs/{job_id}/export", params={"format": "pytorch"})
    assert code.status_code == 200, code.text
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(code.text, "model.py", "exec"), namespace)  # the file under test
    model = namespace["build_model"]().eval()
    model.load_state_dict(load(api.get(two_heads["weights"]["url"]).content), strict=True)
    with torch.no_grad():
        got = model(x=x)
    onnx_file = api.get(f"/v1/jobs/{job_id}/export", params={"format": "onnx"})
    assert onnx_file.status_code == 200, onnx_file.text
    session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["label", "value"]
    ran = dict(zip(["label", "value"], session.run(None, {"x": x.numpy()}), strict=True))
    for name in ("label", "value"):
        np.testing.assert_allclose(got[name].numpy(), predicted[name]["outputs"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ran[name], predicted[name]["outputs"], rtol=1e-4, atol=1e-5)


def test_a_graph_with_two_inputs_trains_on_an_npz_of_three_arrays(api: TestClient) -> None:
    arrays = digits_arrays()
    pixels = arrays["x"].reshape(len(arrays["x"]), 64)
    three = {"top": pixels[:, :32], "bottom": pixels[:, 32:], "label": arrays["y"]}
    dataset_id = uploaded(api, three)
    dataset = {"id": dataset_id, "inputs": {"top": "top", "bottom": "bottom"}, "targets": {"logits": "label"}}
    body = graph_job(TWO_INPUTS, dataset, loss={"type": "CrossEntropyLoss"})
    done = wait(api, submit(api, body), finished)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["outputs"]["logits"]["val_accuracy"] > 0.8, done["metrics"]

    test = {name: array[:50] for name, array in three.items()}
    test_id = uploaded(api, test)
    predict = f"/v1/jobs/{done['id']}/predict"
    inline = api.post(
        predict, json={"inputs": {"top": test["top"].tolist(), "bottom": test["bottom"].tolist()}}
    )
    assert inline.status_code == 200, inline.text
    on_dataset = api.post(predict, json={"dataset": test_id})
    assert on_dataset.status_code == 200, on_dataset.text
    by_inputs, by_dataset = inline.json()["outputs"]["logits"], on_dataset.json()["outputs"]["logits"]
    assert by_dataset["predictions"] == by_inputs["predictions"] and on_dataset.json()["samples"] == 50
    assert by_dataset["accuracy"] == np.mean(np.array(by_inputs["predictions"]) == test["label"])
    assert by_dataset["loss"] > 0


def _npz_id(api: TestClient) -> str:
    data = digits_arrays()
    pixels = data["x"].reshape(len(data["x"]), 64)
    return uploaded(api, {"top": pixels[:, :32], "bottom": pixels[:, 32:], "label": data["y"]})


@pytest.mark.parametrize(
    ("case", "loc", "words"),
    [
        ("losses naming a missing output", ["body", "losses", "nope"], "no output 'nope'"),
        ("a graph with loss and several outputs", ["body", "loss"], "2 outputs"),
        (
            "a dataset missing an input",
            ["body", "dataset", "inputs"],
            "inputs ['top', 'bottom'] to arrays; got ['top']",
        ),
        ("inline data for a graph", ["body", "dataset", "name"], "uploaded or synthetic"),
        ("an input of the wrong shape", ["body", "dataset", "inputs", "bottom"], "[32]"),
    ],
)
def test_bad_graph_jobs_are_a_422_at_the_field(api: TestClient, case: str, loc: list, words: str) -> None:
    synthetic = {"name": "synthetic", "samples": 64}
    if case == "losses naming a missing output":
        body = graph_job(TWO_HEADS, synthetic, losses={**LOSSES, "nope": {"type": "MSELoss"}})
    elif case == "a graph with loss and several outputs":
        body = graph_job(TWO_HEADS, synthetic, loss={"type": "MSELoss"})
    elif case == "inline data for a graph":
        inline = {"name": "inline", "x": [[0.0] * 16] * 4, "y": [0, 1, 2, 0]}
        body = graph_job(TWO_HEADS, inline, losses=LOSSES)
    else:
        inputs = {"top": "top"} if case == "a dataset missing an input" else {"top": "top", "bottom": "label"}
        dataset = {"id": _npz_id(api), "inputs": inputs, "targets": {"logits": "label"}}
        body = graph_job(TWO_INPUTS, dataset, loss={"type": "CrossEntropyLoss"})
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and words in error["msg"], error


def test_predict_on_a_graph_job_takes_its_inputs_by_name(api: TestClient, two_heads: dict) -> None:
    predict = f"/v1/jobs/{two_heads['id']}/predict"
    as_list = api.post(predict, json={"inputs": [[0.0] * 16]})
    assert as_list.status_code == 422 and "by name" in as_list.json()["detail"][0]["msg"], as_list.text
    wrong = api.post(predict, json={"inputs": {"x": [[0.0] * 15]}})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "inputs", "x"], (
        wrong.text
    )
    unknown = api.post(predict, json={"inputs": {"x": [0.0] * 16, "y": [1.0]}})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "inputs", "y"]


TOKENS_AND_MASK = {
    "inputs": {"tokens": {"shape": [4, 6], "dtype": "int64"}, "mask": {"shape": [4, 6], "dtype": "bool"}},
    "nodes": [
        {"name": "tok", "type": "Embedding", "num_embeddings": 20, "embedding_dim": 16, "input": "tokens"},
        {
            "name": "enc",
            "type": "TransformerEncoderLayer",
            "nhead": 2,
            "dim_feedforward": 32,
            "input": "tok",
            "src_key_padding_mask": "mask",
        },
        {"name": "cls", "type": "Select", "dim": 1, "index": 0, "input": "enc"},
        {"name": "head", "type": "Linear", "out_features": 4, "input": "cls"},
        {"name": "reg", "type": "Linear", "out_features": 3, "input": "cls"},
    ],
    "outputs": {"logits": "head", "value": "reg"},
}


def test_synthetic_data_for_a_graph_follows_its_inputs_and_lossed_outputs() -> None:
    body = graph_job(
        TOKENS_AND_MASK,
        {"name": "synthetic", "samples": 64, "vocab_size": 1000},
        losses={"logits": {"type": "CrossEntropyLoss"}},
        epochs=1,
    )
    plan = plan_job(JobCreate.model_validate(body))
    x, y = load_data(plan.payload, True)
    assert x["tokens"].dtype == torch.int64 and x["tokens"].shape == (64, 6)
    assert int(x["tokens"].min()) >= 0 and int(x["tokens"].max()) < 20  # the Embedding's size, not vocab_size
    assert x["mask"].dtype == torch.bool and not bool(x["mask"].any())
    assert list(y) == ["logits"] and y["logits"].dtype == torch.int64 and int(y["logits"].max()) < 4
    events = list(train(plan.payload.model_dump(mode="json")))
    assert events[-1].kind == "done", events[-1]
    assert list(events[-1].metrics.outputs) == ["logits"]  # "value" has no loss: not trained on
