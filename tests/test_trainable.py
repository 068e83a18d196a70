"""Frozen layers (``trainable: false``, issue 18) against torch's own ``requires_grad_(False)``:

- the summary counts them in ``total_params``, not in ``trainable_params``;
- the memory estimate gives them no gradient and no optimizer state, and counts only what
  autograd really saves for backward (measured on real tensors, the same parameters frozen);
- a job's optimizer never sees them: they come out of training bit for bit as they went in;
- the exported code freezes them; a tied weight is frozen as its owner is.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from safetensors.torch import load
from test_memory import real_saved_bytes
from test_training import payload
from torch import nn

from app.jobs.plan import plan_job
from app.jobs.train import TrainPayload, _Run, train
from app.schemas.jobs import JobCreate
from layers import ModelSpec
from layers.analysis.cache import TraceCache
from layers.analysis.memory import estimate_memory, optimizer_state_bytes, storage_bytes
from layers.analysis.trace import trace_model
from layers.export.codegen import python_file
from layers.language.errors import SpecError
from layers.training.optimizers import AdamSpec

CONV = {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}


def frozen(layer: dict) -> dict:
    return {**layer, "trainable": False}


def thawed(layers: Any) -> Any:
    """The spec with every ``trainable`` removed: what torch is then asked to freeze by hand."""
    if isinstance(layers, dict):
        return {k: thawed(v) for k, v in layers.items() if k != "trainable"}
    if isinstance(layers, list):
        return [thawed(v) for v in layers]
    return layers


# name: (layers, input shape, the module paths torch freezes by hand)
CASES: dict[str, tuple[list[dict], tuple[int, ...], list[str]]] = {
    "frozen_first_linear": (
        [
            frozen({"type": "Linear", "out_features": 32}),
            {"type": "ReLU"},
            {"type": "Linear", "out_features": 4},
        ],
        (8, 16),
        ["0"],
    ),
    "frozen_middle_linear": (  # still saves what the first layer's gradient needs
        [
            {"type": "Linear", "out_features": 32},
            {"type": "ReLU"},
            frozen({"type": "Linear", "out_features": 32}),
            {"type": "Tanh"},
            {"type": "Linear", "out_features": 4},
        ],
        (8, 16),
        ["2"],
    ),
    "frozen_backbone_container": (  # a container: everything inside, BatchNorm included
        [
            frozen(
                {
                    "type": "Sequential",
                    "layers": [
                        CONV,
                        {"type": "BatchNorm2d"},
                        {"type": "ReLU"},
                        CONV,
                        {"type": "BatchNorm2d"},
                    ],
                }
            ),
            {"type": "ReLU"},
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 10},
        ],
        (4, 3, 12, 12),
        ["0"],
    ),
    "frozen_lstm_first": (  # its measured stand-in keeps nothing: no gradient flows into it
        [frozen({"type": "LSTM", "hidden_size": 8}), {"type": "Linear", "out_features": 2}],
        (2, 5, 8),
        ["0"],
    ),
    "frozen_repeat_in_a_residual": (
        [
            {"type": "Linear", "out_features": 24},
            {
                "type": "Residual",
                "layers": [
                    frozen(
                        {
                            "type": "Repeat",
                            "times": 3,
                            "layers": [{"type": "LayerNorm"}, {"type": "Linear", "out_features": 24}],
                        }
                    )
                ],
            },
            {"type": "Linear", "out_features": 4},
        ],
        (6, 10, 16),
        ["1.layers.0"],
    ),
}


def by_hand(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The case's model as the spec without ``trainable`` builds it, frozen by torch's own call."""
    layers, shape, paths = CASES[name]
    traced = trace_model(ModelSpec.model_validate({"layers": thawed(layers)}), shape)
    torch.manual_seed(0)
    model = traced.spec.build()
    for path in paths:
        model.get_submodule(path).requires_grad_(False)
    return model, torch.randn(shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_counts_frozen_params_in_the_total_only(client, name: str) -> None:
    layers, shape, _ = CASES[name]
    summary = client.post(
        "/v1/models/summary", json={"model": {"layers": layers}, "input_shape": shape}
    ).json()
    model, _ = by_hand(name)
    assert summary["total_params"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary["trainable_params"] < summary["total_params"]
    ours = {f"{row['path']}.{p['name']}": p["trainable"] for row in summary["layers"] for p in row["params"]}
    assert ours == {name: p.requires_grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_memory_of_frozen_layers_is_what_torch_keeps(name: str) -> None:
    """Gradients and Adam's state only for the trainable parameters, and the activations autograd
    saves with those frozen, on real tensors: all exactly."""
    layers, shape, _ = CASES[name]
    traced = trace_model(ModelSpec.model_validate({"layers": layers}), shape)
    breakdown = estimate_memory(traced, AdamSpec(), "cpu").memory.breakdown
    model, x = by_hand(name)
    assert breakdown.activations == real_saved_bytes(model, x)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable)
    model(x).float().pow(2).mean().backward()
    optimizer.step()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert breakdown.gradients == storage_bytes([p.grad for p in trainable])
    assert breakdown.optimizer_state == optimizer_state_bytes(optimizer)
    # and less than with nothing frozen
    thawed_trace = trace_model(ModelSpec.model_validate({"layers": thawed(layers)}), shape)
    assert breakdown.gradients < estimate_memory(thawed_trace, AdamSpec(), "cpu").memory.breakdown.gradients


def test_trainable_takes_only_a_json_boolean(client) -> None:
    for value in (0, "false", None):
        body = {
            "model": {"layers": [{"type": "Linear", "out_features": 2, "trainable": value}]},
            "input_shape": [1, 3],
        }
        response = client.post("/v1/models/summary", json=body)
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "model", "layers", 0, "Linear", "trainable"], error
        assert error["type"] == "bool_type" and "boolean" in error["msg"]


def test_the_echoed_spec_shows_trainable_only_when_false(client) -> None:
    layers = [
        frozen({"type": "Linear", "out_features": 2}),
        {"type": "Linear", "out_features": 2, "trainable": True},
    ]
    summary = client.post(
        "/v1/models/summary", json={"model": {"layers": layers}, "input_shape": [1, 3]}
    ).json()
    first, second = summary["model"]["layers"]
    assert first["trainable"] is False and "trainable" not in second
    assert (
        summary["layers"][0]["spec"]["trainable"] is False and "trainable" not in summary["layers"][1]["spec"]
    )


def test_the_schema_offers_trainable_on_every_layer(client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("LinearSpec", "RepeatSpec", "CausalSelfAttentionSpec"):
        field = schemas[name]["properties"]["trainable"]
        assert field["type"] == "boolean" and field["default"] is True and "freezes" in field["description"]


TIED = [
    {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 8, "name": "emb"},
    {"type": "Linear", "out_features": 10, "tie_weight": "emb"},
]


@pytest.mark.parametrize("which", [0, 1])
def test_a_tied_weight_is_frozen_as_its_owner_is(client, which: int) -> None:
    """torch shares one Parameter: freezing the owner freezes the head's weight; freezing the head
    leaves the shared weight trainable (the head's own bias is frozen)."""
    layers = copy.deepcopy(TIED)
    layers[which]["trainable"] = False
    body = {"model": {"layers": layers}, "input_shape": [2, 5], "input_dtype": "int64"}
    summary = client.post("/v1/models/summary", json=body).json()
    emb, head = nn.Embedding(10, 8), nn.Linear(8, 10)
    [emb, head][which].requires_grad_(False)
    head.weight = emb.weight  # as exported code and torch users tie
    reference = nn.Sequential(emb, head)
    assert summary["total_params"] == sum(p.numel() for p in reference.parameters()) == 90
    assert summary["trainable_params"] == sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert summary["trainable_params"] == [10, 80][which]
    traced = trace_model(ModelSpec.model_validate({"layers": layers}), (2, 5), "int64")
    source = python_file(traced, "tied").decode()
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(source, "model.py", "exec"), namespace)  # the generated file under test
    exported = namespace["build_model"]()
    assert exported[1].weight is exported[0].weight
    assert [p.requires_grad for p in exported.parameters()] == [
        p.requires_grad for p in reference.parameters()
    ]


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_code_freezes_the_same_parameters(name: str) -> None:
    layers, shape, _ = CASES[name]
    traced = trace_model(ModelSpec.model_validate({"layers": layers}), shape)
    source = python_file(traced, name).decode()
    assert ".requires_grad_(False)" in source
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(source, "model.py", "exec"), namespace)  # the generated file under test
    exported = namespace["build_model"]()
    model, _ = by_hand(name)
    assert str(exported) == str(model)
    assert {n: p.requires_grad for n, p in exported.named_parameters()} == {
        n: p.requires_grad for n, p in model.named_parameters()
    }


def test_training_leaves_frozen_weights_bit_identical() -> None:
    """The job's loop (app/jobs/train.py) on real data: the frozen first Linear comes out as the
    job's seed made it, the trained head does not."""
    model = {
        "layers": [
            frozen({"type": "Linear", "out_features": 16}),
            {"type": "ReLU"},
            {"type": "Linear", "out_features": 2},
        ]
    }
    dataset = {"name": "synthetic", "task": "regression", "shape": [8], "targets": 2, "samples": 128}
    p = payload(model, dataset, {"type": "MSELoss"}, optimizer={"type": "AdamW", "lr": 0.05}, batch_size=16)
    events = [event for event in train(p)]
    assert events[-1].kind == "done", events[-1]
    trained = load(events[-1].weights)
    torch.manual_seed(p["seed"])
    initial = ModelSpec.model_validate(p["model"]).build().state_dict()
    assert torch.equal(trained["0.weight"], initial["0.weight"]) and torch.equal(
        trained["0.bias"], initial["0.bias"]
    )
    assert not torch.equal(trained["2.weight"], initial["2.weight"])


def test_the_jobs_optimizer_holds_only_the_trainable_parameters() -> None:
    """So a frozen one gets no state, and no weight decay or momentum can move it."""
    model = {
        "layers": [frozen({"type": "Linear", "out_features": 16}), {"type": "Linear", "out_features": 2}]
    }
    dataset = {"name": "synthetic", "task": "regression", "shape": [8], "targets": 2, "samples": 32}
    job = TrainPayload.model_validate(payload(model, dataset, {"type": "MSELoss"}))
    run = _Run.prepare(job, torch.device("cpu"))
    held = [p for group in run.optimizer.param_groups for p in group["params"]]
    assert held == [run.model[1].weight, run.model[1].bias]


def test_a_model_with_every_parameter_frozen_has_nothing_to_train() -> None:
    model = {
        "layers": [
            frozen(
                {
                    "type": "Sequential",
                    "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}],
                }
            )
        ]
    }
    job = JobCreate.model_validate(
        {
            "model": model,
            "dataset": {"name": "digits"},
            "loss": {"type": "CrossEntropyLoss"},
            "optimizer": {"type": "Adam"},
        }
    )
    with pytest.raises(SpecError) as e:
        plan_job(job)
    assert e.value.loc == ("model",)
    assert "nothing to train" in e.value.msg and "trainable: false" in e.value.msg
    assert e.value.ctx == {"trainable_params": 0, "total_params": 64 * 10 + 10}


class WhisperEncoderLayer(nn.Module):
    """Hugging Face's WhisperEncoderLayer (pre-norm; the key projection has no bias)."""

    def __init__(self, d_model: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.ModuleDict(
            {
                "q_proj": nn.Linear(d_model, d_model),
                "k_proj": nn.Linear(d_model, d_model, bias=False),
                "v_proj": nn.Linear(d_model, d_model),
                "out_proj": nn.Linear(d_model, d_model),
            }
        )
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)


class WhisperEncoder(nn.Module):
    """Hugging Face's WhisperEncoder, parameters only: its sinusoidal table is an ``nn.Embedding``
    it freezes (``embed_positions.requires_grad_(False)``)."""

    def __init__(self, mels: int = 80, d_model: int = 384, layers: int = 4, positions: int = 1500) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(positions, d_model)
        self.embed_positions.requires_grad_(False)
        self.layers = nn.ModuleList(WhisperEncoderLayer(d_model, 4 * d_model) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d_model)


# whisper-tiny's encoder: 80 mel bins x 3000 frames -> 1500 positions of width 384, 4 layers.
# The attention is counted, not run: its parameters are those of the encoder's (unmasked) one.
WHISPER_TINY_ENCODER = [
    {"type": "Conv1d", "out_channels": 384, "kernel_size": 3, "padding": 1},
    {"type": "GELU"},
    {"type": "Conv1d", "out_channels": 384, "kernel_size": 3, "stride": 2, "padding": 1},
    {"type": "GELU"},
    {"type": "Transpose", "dim0": 1, "dim1": 2},
    {"type": "PositionalEmbedding", "num_positions": 1500, "trainable": False},
    {
        "type": "Repeat",
        "times": 4,
        "layers": [
            {
                "type": "Residual",
                "layers": [
                    {"type": "LayerNorm"},
                    {
                        "type": "CausalSelfAttention",
                        "num_heads": 6,
                        "rope": False,
                        "bias": True,
                        "qkv_bias": [True, False, True],
                    },
                ],
            },
            {
                "type": "Residual",
                "layers": [
                    {"type": "LayerNorm"},
                    {"type": "Linear", "out_features": 1536},
                    {"type": "GELU"},
                    {"type": "Linear", "out_features": 384},
                ],
            },
        ],
    },
    {"type": "LayerNorm"},
]


def test_whisper_tiny_encoders_positional_table_is_not_trained(client) -> None:
    body = {"model": {"layers": WHISPER_TINY_ENCODER}, "input_shape": [1, 80, 3000]}
    summary = client.post("/v1/models/summary", json=body).json()
    with torch.device("meta"):
        reference = WhisperEncoder()
    assert summary["total_params"] == sum(p.numel() for p in reference.parameters())
    assert summary["trainable_params"] == sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert summary["total_params"] - summary["trainable_params"] == 1500 * 384 == 576_000
    positions = summary["layers"][5]
    assert positions["type"] == "PositionalEmbedding" and positions["output_shape"] == [1, 1500, 384]
    assert [p["trainable"] for p in positions["params"]] == [False]


def test_the_trace_cache_tells_a_frozen_layer_from_the_same_layer_trained() -> None:
    """A Linear traced trainable, then inside a frozen container (its own spec unchanged), then
    trainable again: each trace builds it as torch would, never from the other's entry."""
    linear = {"type": "Linear", "out_features": 8}
    plain = ModelSpec.model_validate({"layers": [linear]})
    wrapped = ModelSpec.model_validate({"layers": [frozen({"type": "Sequential", "layers": [linear]})]})
    cache = TraceCache(1 << 24)
    for spec, trainable in [(plain, True), (wrapped, False), (plain, True), (wrapped, False)]:
        traced = trace_model(spec, (2, 4), cache=cache)
        assert [p.requires_grad for p in traced.module.parameters()] == [trainable, trainable]
        assert traced.layers[-1].output.requires_grad is trainable
    assert len(cache) == 3  # the Linear twice (trained, frozen) and the container
