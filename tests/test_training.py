"""Losses, optimizers, datasets and the training loop, in-process (no Ray), against PyTorch itself."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from safetensors.torch import load
from sklearn.datasets import load_digits
from torch import nn

from app.core.config import settings
from app.examples import DIGITS_MLP
from app.jobs.train import train
from layers import ModelSpec
from layers.analysis.trace import trace_model
from layers.language.errors import SpecError
from layers.training.datasets import (
    AnyDataset,
    DigitsDataset,
    InlineDataset,
    SyntheticDataset,
    bounded_datasets,
)
from layers.training.losses import LOSS_SPECS, AnyLoss, Targets
from layers.training.optimizers import OPTIMIZER_SPECS, AnyOptimizer

LOSS = TypeAdapter(AnyLoss)
OPTIMIZER = TypeAdapter(AnyOptimizer)
DATASET = TypeAdapter(AnyDataset)

# Each loss with non-default arguments, the equivalent PyTorch module, and matching (output, target).
LOSSES = {
    "MSELoss": ({"beta": None}, nn.MSELoss()),
    "L1Loss": ({}, nn.L1Loss()),
    "SmoothL1Loss": ({"beta": 0.5}, nn.SmoothL1Loss(beta=0.5)),
    "CrossEntropyLoss": ({"label_smoothing": 0.1}, nn.CrossEntropyLoss(label_smoothing=0.1)),
    "NLLLoss": ({}, nn.NLLLoss()),
    "BCEWithLogitsLoss": ({"pos_weight": 2.0}, nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))),
}
OPTIMIZERS = {
    "SGD": ({"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, torch.optim.SGD),
    "Adam": ({"lr": 0.01, "betas": [0.8, 0.99], "amsgrad": True}, torch.optim.Adam),
    "AdamW": ({"lr": 0.01, "weight_decay": 0.1}, torch.optim.AdamW),
    "RMSprop": ({"lr": 0.01, "momentum": 0.5, "centered": True}, torch.optim.RMSprop),
}


def test_every_loss_and_optimizer_is_covered() -> None:
    assert set(LOSSES) == set(LOSS_SPECS)
    assert set(OPTIMIZERS) == set(OPTIMIZER_SPECS)


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_loss_equals_pytorch(name: str) -> None:
    args, reference = LOSSES[name]
    args = {k: v for k, v in args.items() if v is not None}
    spec = LOSS.validate_python({"type": name, **args})
    g = torch.Generator().manual_seed(0)
    out = torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 4, (8,), generator=g)
    if spec.task == "classification":
        target = spec.prepare(labels, (4,))
        if name == "NLLLoss":
            out = out.log_softmax(1)
    else:
        target = spec.prepare(torch.randn(8, 4, generator=g), (4,))
    torch.testing.assert_close(spec.build()(out, target), reference(out, target), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(OPTIMIZER_SPECS))
def test_optimizer_steps_like_pytorch(name: str) -> None:
    args, cls = OPTIMIZERS[name]
    spec = OPTIMIZER.validate_python({"type": name, **args})
    torch.manual_seed(0)
    ours = nn.Linear(4, 3)
    theirs = copy.deepcopy(ours)
    opt_ours = spec.build(ours.parameters())
    opt_theirs = cls(
        theirs.parameters(), **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    )
    x = torch.randn(16, 4)
    for _ in range(3):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def state(optimizer: torch.optim.Optimizer) -> list[dict[str, list[int]]]:
        return [
            {k: list(v.shape) for k, v in s.items() if torch.is_tensor(v)} for s in optimizer.state.values()
        ]

    assert state(opt_ours) == state(opt_theirs)  # the same state, tensor by tensor


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "SGD", "nesterov": True},  # nesterov without momentum
        {"type": "Adam", "lr": 0},
        {"type": "Adam", "betas": [0.9, 1.0]},
        {"type": "RMSprop", "weight_decay": -1},
        {"type": "LBFGS"},
        {"type": "Adam", "momentum": 0.9},  # not an Adam argument
    ],
)
def test_bad_optimizers_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        OPTIMIZER.validate_python(bad)


def test_loss_checks_output_against_targets() -> None:
    classes, values = Targets(10, ()), Targets(None, (3,))
    ce = LOSS.validate_python({"type": "CrossEntropyLoss"})
    ce.check((10,), classes, ("model", "layers", 2))
    with pytest.raises(SpecError) as e:
        ce.check((5,), classes, ("model", "layers", 2))
    assert e.value.loc == ("model", "layers", 2) and "10" in e.value.msg
    with pytest.raises(SpecError) as e:
        ce.check((3,), values, ("model", "layers", 2))
    assert e.value.loc == ("loss", "type")
    mse = LOSS.validate_python({"type": "MSELoss"})
    mse.check((3,), values, ("model", "layers", 0))
    with pytest.raises(SpecError) as e:
        mse.check((10,), classes, ("model", "layers", 0))
    assert e.value.loc == ("loss", "type")
    with pytest.raises(SpecError):
        mse.check((4,), values, ("model", "layers", 0))
    bce = LOSS.validate_python({"type": "BCEWithLogitsLoss"})
    bce.check((1,), Targets(2, ()), ())
    bce.check((10,), classes, ())
    with pytest.raises(SpecError):
        bce.check((1,), classes, ())


def test_digits_are_sklearns_digits_scaled() -> None:
    x, y = DigitsDataset().load(True, settings)
    digits = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    torch.testing.assert_close(x.reshape(1797, 64) * 16, torch.tensor(digits.data, dtype=torch.float32))
    assert y.tolist() == digits.target.tolist()
    info = DigitsDataset().describe(True, settings)
    assert (info.samples, info.sample_shape, info.targets.num_classes) == (1797, (1, 8, 8), 10)


def test_split_is_fixed_by_the_dataset_seed() -> None:
    x, y = DigitsDataset().load(True, settings)
    a, b = DigitsDataset().split(x, y), DigitsDataset().split(x, y)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert a[0].shape[0] + a[2].shape[0] == 1797 and a[2].shape[0] == round(1797 * 0.2)
    other = DigitsDataset(split_seed=1).split(x, y)
    assert not torch.equal(a[3], other[3])


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_synthetic_data_has_the_requested_shape_and_is_seeded(dtype: str) -> None:
    spec = SyntheticDataset(shape=[3, 5], samples=64, num_classes=4, dtype=dtype)
    x, y = spec.load(True, settings)
    assert x.shape == (64, 3, 5) and str(x.dtype) == f"torch.{dtype}"
    assert y.shape == (64,) and int(y.min()) >= 0 and int(y.max()) < 4
    assert torch.equal(spec.load(True, settings)[0], x)
    reg = SyntheticDataset(task="regression", shape=[6], samples=32, targets=2, noise=0.1)
    assert reg.load(False, settings)[1].shape == (32, 2) and reg.describe(False, settings).targets.shape == (
        2,
    )


def test_inline_data_is_checked() -> None:
    ok = InlineDataset(x=[[0, 1], [1, 0], [1, 1]], y=[0, 1, 1])
    info = ok.describe(True, settings)
    assert (info.samples, info.sample_shape, info.targets.num_classes) == (3, (2,), 2)
    for bad, field in [
        ({"x": [[0, 1], [1]], "y": [0, 1]}, "x"),  # ragged
        ({"x": [[0, 1], [1, 0]], "y": [0, 1, 1]}, "y"),  # lengths differ
        ({"x": [[0, 1], [1, 0]], "y": [0.5, 1]}, "y"),  # not class indices (at the element: y[0])
        ({"x": [["a", 1], [1, 0]], "y": [0, 1]}, "x"),  # not numbers
    ]:
        with pytest.raises(SpecError) as e:
            InlineDataset(**bad).describe(True, settings)
        assert e.value.loc[:2] == ("dataset", field), bad


def test_the_service_bounds_dataset_sizes_by_the_limits_it_passes() -> None:
    limits = SimpleNamespace(max_dataset_samples=4, max_dataset_numel=12, max_input_rank=3)
    bounded = TypeAdapter(bounded_datasets(limits))
    synthetic = {"name": "synthetic", "shape": [3]}
    for dataset, loc in [
        ({**synthetic, "samples": 5}, ("samples",)),
        ({"name": "inline", "x": [[0.0]] * 5, "y": [0] * 4}, ("x",)),
        ({"name": "inline", "x": [[0.0]] * 4, "y": [0] * 5}, ("y",)),
    ]:
        DATASET.validate_python(dataset)  # the spec language alone has no such limit
        with pytest.raises(ValidationError) as e:
            bounded.validate_python(dataset)
        assert e.value.errors()[0]["loc"][1:] == loc, dataset
    with pytest.raises(SpecError) as e:  # limits checked on the data itself, as the API describes it
        bounded.validate_python({**synthetic, "samples": 4, "shape": [4]}).describe(True, limits)
    assert e.value.loc == ("dataset", "samples") and e.value.ctx == {"limit": 12, "got": 16}
    schema = bounded.json_schema()["$defs"]
    assert schema["SyntheticDataset"]["properties"]["samples"]["maximum"] == 4
    assert schema["InlineDataset"]["properties"]["x"]["maxItems"] == 4
    assert schema["SyntheticDataset"]["description"] == SyntheticDataset.model_json_schema()["description"]


def payload(model: dict, dataset: dict, loss: dict, **extra: object) -> dict:
    """What the API sends a worker, made the way app.jobs.plan makes it."""
    spec = ModelSpec.model_validate(model)
    classification = LOSS.validate_python(loss).task == "classification"
    info = DATASET.validate_python(dataset).describe(classification, settings)
    traced = trace_model(spec, (2, *info.sample_shape), info.dtype)
    return {
        "model": traced.spec.model_dump(),
        "output_shapes": {"output": list(traced.output_shape[1:])},
        "dataset": dataset,
        "losses": {"output": loss},
        "optimizer": {"type": "Adam", "lr": 0.01},
        "epochs": 2,
        "batch_size": 64,
        "seed": 0,
        "device": "cpu",
        "time_limit_s": 120,
        "progress_every": 10,
        "threads": 1,
        **extra,
    }


def run(p: dict) -> list[dict]:
    events = [event.model_dump() for event in train(p)]
    assert events[-1]["kind"] == "done", events[-1]
    return events


def epochs(events: list[dict]) -> list[dict]:
    return [e["entry"] for e in events if e["kind"] == "epoch"]


def test_same_seed_same_history_and_another_seed_differs() -> None:
    p = payload(DIGITS_MLP, {"name": "digits"}, {"type": "CrossEntropyLoss"})
    first = epochs(run(p))
    again = epochs(run(p))
    other = epochs(run({**p, "seed": 1}))
    assert first == again
    assert [e["train_loss"] for e in first] != [e["train_loss"] for e in other]
    events = run(p)
    assert next(e["kind"] for e in events) == "started" and events[0]["device"] == "cpu"
    assert [e["progress"]["step"] for e in events if e["kind"] == "progress"] == [10, 20, 30, 40]


@pytest.mark.parametrize(
    "model,dataset,loss",
    [
        (  # regression on a synthetic linear teacher
            {"layers": [{"type": "Linear", "out_features": 2}]},
            {"name": "synthetic", "task": "regression", "shape": [8], "targets": 2, "samples": 512},
            {"type": "MSELoss"},
        ),
        (  # token ids through an Embedding, classified with BCE on one logit
            {
                "layers": [
                    {"type": "Embedding", "num_embeddings": 20, "embedding_dim": 8},
                    {"type": "Flatten"},
                    {"type": "Linear", "out_features": 1},
                ]
            },
            {"name": "synthetic", "shape": [4], "dtype": "int64", "vocab_size": 20, "num_classes": 2},
            {"type": "BCEWithLogitsLoss"},
        ),
        (  # NLL on log-probabilities, inline data
            {"layers": [{"type": "Linear", "out_features": 2}, {"type": "LogSoftmax", "dim": 1}]},
            {"name": "inline", "x": [[0.0, 1.0], [1.0, 0.0]] * 20, "y": [0, 1] * 20},
            {"type": "NLLLoss"},
        ),
    ],
)
def test_other_tasks_learn(model: dict, dataset: dict, loss: dict) -> None:
    history = epochs(run(payload(model, dataset, loss, epochs=15, batch_size=8)))
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"], history


def test_a_diverging_loss_fails_the_job_clearly() -> None:
    dataset = {"name": "synthetic", "task": "regression", "shape": [8], "targets": 2, "samples": 256}
    model = {"layers": [{"type": "Linear", "out_features": 2}]}
    sgd = {"type": "SGD", "lr": 10}  # far too large: the loss overflows to inf within a few epochs
    events = list(train(payload(model, dataset, {"type": "MSELoss"}, optimizer=sgd, epochs=20)))
    assert events[-1].kind == "failed" and "diverged" in events[-1].error, events[-1]


def test_a_worker_failure_is_a_failed_event_not_an_exception() -> None:
    p = payload(DIGITS_MLP, {"name": "digits"}, {"type": "CrossEntropyLoss"})
    p["model"]["layers"][1]["in_features"] = 7  # a spec the API's trace would have refused
    events = list(train(p))
    assert events[-1].kind == "failed" and "RuntimeError" in events[-1].error, events[-1]


@pytest.mark.parametrize(
    "optimizer", [{"type": "Adam", "lr": 0.01}, {"type": "SGD", "lr": 0.05, "momentum": 0.9}]
)
def test_a_run_stopped_after_an_epoch_resumes_from_its_checkpoint_with_the_same_result(
    tmp_path: Path, optimizer: dict
) -> None:
    """A worker killed mid-run (the generator dropped after epoch 2, mid-epoch 3) and started
    again resumes from the epoch-2 checkpoint and ends where an uninterrupted run ends."""
    model = {"layers": [*DIGITS_MLP["layers"][:2], {"type": "Dropout", "p": 0.2}, *DIGITS_MLP["layers"][2:]]}
    p = payload(model, {"name": "digits"}, {"type": "CrossEntropyLoss"}, optimizer=optimizer, epochs=4)
    straight = run(p)
    interrupted = {**p, "artifact_dir": str(tmp_path / "job")}
    first = train(interrupted)
    seen = []
    for event in first:
        seen.append(event.kind)
        if event.kind == "progress" and event.progress.epoch == 3:
            break  # killed mid-epoch 3
    first.close()
    assert seen.count("epoch") == 2
    resumed = run(interrupted)
    assert resumed[0]["kind"] == "started" and resumed[0]["resumed_from_epoch"] == 2
    # The checkpointed epochs are reported again (the store keeps each once), then the rest.
    assert epochs(resumed) == epochs(straight)
    assert resumed[-1]["metrics"] == straight[-1]["metrics"]
    resumed_weights, straight_weights = (load(e[-1]["weights"]) for e in (resumed, straight))
    torch.testing.assert_close(resumed_weights, straight_weights, rtol=0, atol=0)  # the same trained model
    assert (tmp_path / "job" / "checkpoint" / "LATEST").read_text() == "epoch-00004"
    assert [d.name for d in (tmp_path / "job" / "checkpoint").iterdir() if d.is_dir()] == ["epoch-00004"]
