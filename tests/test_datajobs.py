"""Training on uploaded datasets, in-process (the loop a worker runs, without Ray): each format,
made here from scikit-learn's digits and wine, learns exactly what the same data given as the
built-in or inline dataset learns (same split seed, same history); standardize against the
statistics torch computes on the training split; the plan's refusals at the field, naming the
array."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import settings
from app.datasets.description import Description
from app.examples import DIGITS_MLP, digits_job
from app.jobs.events import Done, EpochEvent
from app.jobs.plan import JobPlan, plan_job
from app.jobs.train import train
from app.jobs.trained import TrainedModel, dataset_spec, predict_dataset, scaling_of
from app.jobs.weights import load_weights
from app.schemas.export import PredictDataset
from app.schemas.jobs import JobCreate
from layers.language.errors import SpecError
from layers.training.datasets import InlineDataset
from tests import dataset_files as make
from tests.dataset_files import upload

WINE_MLP = {
    "layers": [
        {"type": "Linear", "out_features": 16},
        {"type": "ReLU"},
        {"type": "Linear", "out_features": 3},
    ]
}
FEATURES = list(make.wine_columns())[:-1]


def digits_arrays() -> dict[str, np.ndarray]:
    """The built-in digits dataset's tensors exactly: [N, 1, 8, 8] in [0, 1], and the labels."""
    x, y = make.digits()["x"], make.digits()["y"]
    return {
        "x": torch.tensor(x.reshape(-1, 64) * 1.0, dtype=torch.float32).reshape(-1, 1, 8, 8).numpy() / 16.0,
        "y": y,
    }


def uploaded(api: TestClient, data: bytes, name: str) -> tuple[str, Description]:
    response = upload(api, data, name)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], Description.model_validate(body)


def trained(body: dict, description: Description | None = None) -> tuple[list[dict], JobPlan, Done]:
    """The epochs of the job ``body``, planned and trained in this process; its plan and end."""
    plan = plan_job(JobCreate.model_validate(body), None, description)
    events = list(train(plan.payload))
    assert isinstance(events[-1], Done), events[-1]
    return [e.entry.model_dump() for e in events if isinstance(e, EpochEvent)], plan, events[-1]


def history(body: dict, description: Description | None = None) -> list[dict]:
    return trained(body, description)[0]


def predicts_on_it(
    tmp: Path, plan: JobPlan, done: Done, description: Description, x: torch.Tensor, y: np.ndarray
) -> None:
    """Predict on the uploaded dataset answers what the trained module gives on ``x`` (the inputs
    as the model trained on them), and the accuracy of those predictions against ``y``."""
    weights = tmp / "model.safetensors"
    weights.write_bytes(done.weights)
    spec, module = load_weights(weights)
    data = plan.job.dataset.describe(True, settings)
    model = TrainedModel("job", "sha", spec, module, plan.job, data, scaling_of(weights))
    asked = PredictDataset(id=plan.job.dataset.id)
    dataset, with_targets = dataset_spec(model, asked, description)
    answer = predict_dataset(model, dataset, with_targets, Path(plan.payload.dataset_file))
    with torch.inference_mode():
        expected = module(x).argmax(dim=1).numpy()
    assert answer["predictions"] == expected.tolist() and answer["samples"] == len(y)
    assert answer["accuracy"] == pytest.approx(np.mean(expected == y), abs=1e-12)


def job(model: dict, dataset: dict, **extra: object) -> dict:
    return digits_job(model, dataset=dataset, epochs=2, device="cpu", **extra)


def digits_upload(kind: str) -> bytes:
    return {"npz": make.npz, "safetensors": make.safetensors}[kind](digits_arrays())


@pytest.fixture(autouse=True)
def _predict_whole_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_predict_samples", 2000)  # the digits' 1797 at once


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
def test_digits_uploaded_learn_as_the_built_in_digits(
    datasets_api: TestClient, tmp_path: Path, kind: str
) -> None:
    dataset_id, description = uploaded(datasets_api, digits_upload(kind), f"digits.{kind}")
    dataset = {"id": dataset_id, "inputs": "x", "targets": "y", "split_seed": 3}
    ours, plan, done = trained(job(DIGITS_MLP, dataset), description)
    theirs = history(job(DIGITS_MLP, {"name": "digits", "split_seed": 3}))
    assert ours == theirs and ours[-1]["val_accuracy"] > 0.5
    arrays = digits_arrays()
    predicts_on_it(tmp_path, plan, done, description, torch.from_numpy(arrays["x"]), arrays["y"])


def wine_inline(x: np.ndarray, y: np.ndarray) -> dict:
    return {"name": "inline", "x": x.tolist(), "y": y.tolist(), "split_seed": 1}


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_wine_columns_learn_as_the_same_inline_data(
    datasets_api: TestClient, tmp_path: Path, kind: str
) -> None:
    columns = make.wine_columns()
    dataset_id, description = uploaded(datasets_api, getattr(make, kind)(columns), f"wine.{kind}")
    dataset = {"id": dataset_id, "inputs": FEATURES, "targets": "target", "split_seed": 1}
    x = np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)
    ours, plan, done = trained(job(WINE_MLP, dataset), description)
    assert ours == history(job(WINE_MLP, wine_inline(x, columns["target"])))
    predicts_on_it(tmp_path, plan, done, description, torch.from_numpy(x), columns["target"])


def test_standardize_uses_the_training_split_only(datasets_api: TestClient, tmp_path: Path) -> None:
    columns = make.wine_columns()
    dataset_id, description = uploaded(datasets_api, make.csv(columns), "wine.csv")
    dataset = {
        "id": dataset_id,
        "inputs": FEATURES,
        "targets": "target",
        "split_seed": 1,
        "standardize": True,
    }
    ours, plan, done = trained(job(WINE_MLP, dataset), description)
    # The same scaling, computed here from the rows the split trains on.
    x = torch.tensor(np.stack([columns[name] for name in FEATURES], axis=1), dtype=torch.float32)
    inline = InlineDataset.model_validate(wine_inline(x.numpy(), columns["target"]))
    train_rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[
        len(x) - inline.train_samples(len(x)) :
    ]
    mean, std = x[train_rows].mean(dim=0), x[train_rows].std(dim=0, correction=0)
    theirs = history(job(WINE_MLP, wine_inline(((x - mean) / std).numpy(), columns["target"])))
    assert ours == theirs
    assert ours[-1]["val_accuracy"] > 0.8  # wine needs scaled features to be learned in 2 epochs
    # Predict scales the dataset's inputs by the training split's statistics too.
    predicts_on_it(tmp_path, plan, done, description, (x - mean) / std, columns["target"])


def test_an_image_zip_learns_as_the_same_inline_pixels(datasets_api: TestClient, tmp_path: Path) -> None:
    members, pixels, labels = make.digit_images(120)
    dataset_id, description = uploaded(datasets_api, make.image_zip(members), "digits.zip")
    ours, plan, done = trained(
        job(DIGITS_MLP, {"id": dataset_id, "inputs": "image", "targets": "label"}), description
    )
    x = (pixels.astype(np.float32) / np.float32(255))[:, None]
    assert ours == history(job(DIGITS_MLP, {"name": "inline", "x": x.tolist(), "y": labels.tolist()}))
    predicts_on_it(tmp_path, plan, done, description, torch.from_numpy(x), labels)


def test_the_name_uploaded_may_be_given_or_left_out(datasets_api: TestClient) -> None:
    dataset_id, _ = uploaded(datasets_api, digits_upload("npz"), "digits.npz")
    given = {"name": "uploaded", "id": dataset_id, "inputs": "x", "targets": "y"}
    left_out = {"id": dataset_id, "inputs": "x", "targets": "y"}
    assert JobCreate.model_validate(job(DIGITS_MLP, given)) == JobCreate.model_validate(
        job(DIGITS_MLP, left_out)
    )


def refusal(description: Description, dataset: dict, **extra: object) -> SpecError:
    with pytest.raises(SpecError) as raised:
        plan_job(
            JobCreate.model_validate(job(extra.pop("model", DIGITS_MLP), dataset, **extra)), None, description
        )
    return raised.value


MISMATCHES: dict[str, tuple[Callable[[str], dict], dict, tuple, str]] = {
    "unknown array": (
        lambda i: {"id": i, "inputs": "pixels", "targets": "y"},
        {},
        ("dataset", "inputs"),
        "'pixels'",
    ),
    "unknown target": (
        lambda i: {"id": i, "inputs": "x", "targets": "label"},
        {},
        ("dataset", "targets"),
        "'label'",
    ),
    "not the model's input": (
        lambda i: {"id": i, "inputs": {"tokens": "x"}, "targets": "y"},
        {},
        ("dataset", "inputs", "tokens"),
        "['input']",
    ),
    "images as targets of a classification loss": (
        lambda i: {"id": i, "inputs": "x", "targets": "x"},
        {},
        ("dataset", "targets"),
        "'x'",
    ),
    "too few output classes": (
        lambda i: {"id": i, "inputs": "x", "targets": "y"},
        {"model": {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 4}]}},
        ("model", "layers", 1),
        "at least 10",
    ),
    "the wrong sample shape": (
        lambda i: {"id": i, "inputs": "x", "targets": "y"},
        {"model": {"layers": [{"type": "Linear", "in_features": 64, "out_features": 10}]}},
        ("model", "layers", 0),
        "64",
    ),
    "token ids past the embedding": (
        lambda i: {"id": i, "inputs": "y", "targets": "y", "dtype": "int64"},
        {
            "model": {
                "layers": [
                    {"type": "Embedding", "num_embeddings": 5, "embedding_dim": 4},
                    {"type": "Linear", "out_features": 10},
                ]
            }
        },
        ("model", "layers", 0, "num_embeddings"),
        "up to 9",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_mismatch_with_the_model_is_refused_at_the_field(datasets_api: TestClient, case: str) -> None:
    dataset_id, description = uploaded(datasets_api, digits_upload("npz"), "digits.npz")
    dataset, extra, loc, named = MISMATCHES[case]
    error = refusal(description, dataset(dataset_id), **extra)
    assert error.loc[: len(loc)] == loc and named in error.msg, (error.loc, error.msg)


def test_float_targets_are_no_class_indices(datasets_api: TestClient) -> None:
    columns = make.wine_columns()
    dataset_id, description = uploaded(datasets_api, make.parquet(columns), "wine.parquet")
    error = refusal(description, {"id": dataset_id, "inputs": FEATURES, "targets": "alcohol"}, model=WINE_MLP)
    assert error.loc == ("dataset", "targets") and "'alcohol'" in error.msg and "class indices" in error.msg


def test_inline_booleans_are_refused_at_the_element() -> None:
    body = job(DIGITS_MLP, {"name": "inline", "x": [[0.5, 1.0], [[True], 2.0]], "y": [0, 1]})
    with pytest.raises(SpecError) as raised:
        plan_job(JobCreate.model_validate(body))
    assert raised.value.loc == ("dataset", "x", 1, 0, 0) and "boolean" in raised.value.msg


def test_a_deleted_file_fails_the_job_with_the_reason(datasets_api: TestClient, datasets_dir: Path) -> None:
    dataset_id, description = uploaded(datasets_api, digits_upload("npz"), "digits.npz")
    plan = plan_job(
        JobCreate.model_validate(job(DIGITS_MLP, {"id": dataset_id, "inputs": "x", "targets": "y"})),
        None,
        description,
    )
    (datasets_dir / "datasets" / dataset_id).unlink()
    events = list(train(plan.payload))
    assert "no longer stored" in events[-1].error
