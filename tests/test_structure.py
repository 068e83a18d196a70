"""Names, weight tying, Repeat, Multiply and broadcasting Residuals: against PyTorch, and their 422s."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from torch_modules import Multiply, MyLinear, Residual, count_params

from app.jobs.train import train
from layers import ModelSpec
from layers.analysis.trace import trace_model

URL = "/v1/models/summary"
LAYERS = ["body", "model", "layers"]


def post(client, layers: list[dict], shape: list[int], dtype: str = "float32"):
    body = {"model": {"layers": layers}, "input_shape": shape, "input_dtype": dtype}
    return client.post(URL, json=body)


def error(response) -> dict:
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]


EMBEDDING = {"type": "Embedding", "num_embeddings": 20, "embedding_dim": 8, "name": "wte"}


# -- names and weight tying ----------------------------------------------------------------------


@pytest.mark.parametrize("head_type", ["Linear", "MyLinear"])
def test_tied_head_shares_the_embedding_tensor(client, head_type: str) -> None:
    head = {"type": head_type, "out_features": 20, "tie_weight": "wte"}
    summary = post(client, [EMBEDDING, {"type": "ReLU"}, head], [2, 5], "int64").json()
    torch.manual_seed(0)
    emb, linear = nn.Embedding(20, 8), nn.Linear(8, 20) if head_type == "Linear" else MyLinear(8, 20)
    (linear if head_type == "Linear" else linear.linear).weight = emb.weight
    reference = nn.Sequential(emb, nn.ReLU(), linear)
    assert summary["total_params"] == count_params(reference)[0] == 20 * 8 + 20
    assert summary["param_bytes"] == 4 * (20 * 8 + 20)
    weight = "weight" if head_type == "Linear" else "linear.weight"
    assert [(p["name"], p["tied_to"]) for p in summary["layers"][2]["params"]] == [
        (weight, "0"),
        (weight.replace("weight", "bias"), None),
    ]
    assert summary["layers"][2]["num_params"] == 20
    assert summary["model_repr"] == str(reference)


def test_a_tie_to_a_tied_layer_is_counted_at_the_first_owner(client) -> None:
    layers = [
        {"type": "Linear", "out_features": 4, "bias": False, "name": "a"},
        {"type": "Linear", "out_features": 4, "bias": False, "name": "b", "tie_weight": "a"},
        {"type": "Linear", "out_features": 4, "bias": False, "tie_weight": "b"},
    ]
    summary = post(client, layers, [2, 4]).json()
    assert summary["total_params"] == 16
    assert [layer["params"][0]["tied_to"] for layer in summary["layers"]] == [None, "0", "0"]


def test_tied_inside_every_repeat_copy(client) -> None:
    """Each copy of a repeated block ties to the same earlier layer: still one tensor."""
    layers = [
        {"type": "Linear", "out_features": 6, "bias": False, "name": "shared"},
        {
            "type": "Repeat",
            "times": 3,
            "layers": [{"type": "Linear", "out_features": 6, "tie_weight": "shared"}],
        },
    ]
    summary = post(client, layers, [2, 6]).json()
    assert summary["total_params"] == 36 + 3 * 6
    tied = [layer["params"][0]["tied_to"] for layer in summary["layers"] if layer["repeat"]]
    assert tied == ["0", "0", "0"]


def test_trained_tied_model_keeps_one_tensor(tmp_path) -> None:
    spec = ModelSpec.model_validate(
        {"layers": [EMBEDDING, {"type": "Linear", "out_features": 20, "tie_weight": "wte"}]}
    )
    model = trace_model(spec, (2, 5), "int64").spec.build()
    assert model[1].weight is model[0].weight
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2  # the shared weight and the bias
    x = torch.randint(0, 20, (4, 5))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        optimizer.step()
    assert model[1].weight is model[0].weight
    save_model(model, tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert len(list(f.keys())) == 2  # one weight tensor (and the bias), not two
    again = ModelSpec.model_validate(spec.model_dump()).model_copy()
    loaded = trace_model(again, (2, 5), "int64").spec.build()
    load_model(loaded, tmp_path / "model.safetensors")
    assert loaded[1].weight is loaded[0].weight
    torch.testing.assert_close(loaded(x), model(x))


def test_tiny_tied_causal_gpt_learns() -> None:
    """A 2-block causal GPT with a tied head, trained by the service's own loop on CPU: it learns
    to classify token sequences (labelled by a random per-token teacher) from their last position."""
    model = {
        "layers": [
            {"type": "Embedding", "num_embeddings": 16, "embedding_dim": 32, "name": "wte"},
            {"type": "PositionalEmbedding", "num_positions": 8},
            {
                "type": "Repeat",
                "times": 2,
                "layers": [
                    {
                        "type": "TransformerEncoderLayer",
                        "nhead": 4,
                        "dim_feedforward": 64,
                        "dropout": 0.0,
                        "activation": "gelu_tanh",
                        "norm_first": True,
                        "causal": True,
                    }
                ],
            },
            {"type": "LayerNorm"},
            {"type": "Select", "dim": 1, "index": -1},
            {"type": "Linear", "out_features": 16, "bias": False, "tie_weight": "wte"},
        ]
    }
    dataset = {"name": "synthetic", "shape": [8], "dtype": "int64", "vocab_size": 16, "num_classes": 16}
    traced = trace_model(ModelSpec.model_validate(model), (2, 8), "int64")
    payload = {
        "model": traced.spec.model_dump(),
        "output_shapes": {"output": list(traced.output_shape[1:])},
        "dataset": dataset,
        "losses": {"output": {"type": "CrossEntropyLoss"}},
        "optimizer": {"type": "AdamW", "lr": 0.003},
        "epochs": 8,
        "batch_size": 32,
        "seed": 0,
        "device": "cpu",
        "time_limit_s": 120,
        "progress_every": 1000,
        "threads": 1,
    }
    events = [event.model_dump() for event in train(payload)]
    assert events[-1]["kind"] == "done", events[-1]
    history = [e["entry"] for e in events if e["kind"] == "epoch"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"], history
    assert history[-1]["val_accuracy"] > 0.5, history  # chance is 1/16


@pytest.mark.parametrize(
    ("head", "msg"),
    [
        (
            {"type": "Linear", "out_features": 20, "tie_weight": "nope"},
            "no layer before this one is named 'nope'",
        ),
        ({"type": "Linear", "out_features": 20, "tie_weight": "act"}, "'act' is a ReLU"),
        ({"type": "Linear", "out_features": 7, "tie_weight": "wte"}, "has a weight of [20, 8]"),
        ({"type": "MyLinear", "out_features": 7, "tie_weight": "wte"}, "has a weight of [20, 8]"),
    ],
)
def test_bad_tie_is_a_422_at_tie_weight(client, head: dict, msg: str) -> None:
    e = error(post(client, [EMBEDDING, {"type": "ReLU", "name": "act"}, head], [2, 5], "int64"))
    assert e["loc"] == [*LAYERS, 2, "tie_weight"]
    assert msg in e["msg"]


def test_a_tie_to_a_later_layer_is_unknown(client) -> None:
    layers = [
        {"type": "Linear", "out_features": 4, "tie_weight": "later"},
        {"type": "Linear", "out_features": 4, "name": "later"},
    ]
    assert error(post(client, layers, [2, 4]))["loc"] == [*LAYERS, 0, "tie_weight"]


def test_duplicate_name_is_a_422_at_the_second(client) -> None:
    layers = [
        {"type": "Linear", "out_features": 4, "name": "x"},
        {"type": "Residual", "layers": [{"type": "ReLU", "name": "x"}]},
    ]
    e = error(post(client, layers, [2, 4]))
    assert e["loc"] == [*LAYERS, 1, "Residual", "layers", 0, "name"] or e["loc"] == [
        *LAYERS,
        1,
        "layers",
        0,
        "name",
    ]
    assert "already taken by the Linear at module path '0'" in e["msg"]


def test_a_name_inside_repeat_is_a_422(client) -> None:
    layers = [{"type": "Repeat", "times": 2, "layers": [{"type": "ReLU", "name": "r"}]}]
    e = error(post(client, layers, [2, 4]))
    assert e["loc"] == [*LAYERS, 0, "layers", 0, "name"]


@pytest.mark.parametrize("name", ["1x", "a-b", "", "a b", "x" * 65])
def test_names_are_identifiers(client, name: str) -> None:
    e = error(post(client, [{"type": "ReLU", "name": name}], [2, 4]))
    assert e["loc"][-1] == "name"


# -- Repeat --------------------------------------------------------------------------------------


def test_repeat_copies_have_their_own_parameters() -> None:
    spec = ModelSpec.model_validate(
        {"layers": [{"type": "Repeat", "times": 3, "layers": [{"type": "Linear", "out_features": 4}]}]}
    )
    model = trace_model(spec, (2, 4)).spec.build()
    weights = [model[0][i][0].weight for i in range(3)]
    assert len({w.data_ptr() for w in weights}) == 3
    assert [name for name, _ in model.named_parameters()] == [
        f"0.{i}.0.{p}" for i in range(3) for p in ("weight", "bias")
    ]


def test_repeat_must_keep_its_input_shape(client) -> None:
    layers = [{"type": "Repeat", "times": 4, "layers": [{"type": "Linear", "out_features": 3}]}]
    e = error(post(client, layers, [2, 4]))
    assert e["loc"] == [*LAYERS, 0, "layers"]
    assert "must keep its input's shape" in e["msg"] and "[2, 4]" in e["msg"] and "[2, 3]" in e["msg"]


def test_repeat_copies_count_toward_the_layer_limit(client, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import settings

    monkeypatch.setattr(settings, "max_layers", 10)
    block = [{"type": "ReLU"}, {"type": "Identity"}]
    assert post(client, [{"type": "Repeat", "times": 4, "layers": block}], [2, 4]).status_code == 200
    e = error(post(client, [{"type": "Repeat", "times": 5, "layers": block}], [2, 4]))
    assert e["type"] == "limit_exceeded"
    assert e["loc"] == [*LAYERS, 0, "layers", 1]  # the 11th node: copy 4's second layer


def test_huge_repeat_is_refused_quickly(client) -> None:
    layers = [{"type": "Repeat", "times": 4096, "layers": [{"type": "ReLU"}] * 100}]
    assert error(post(client, layers, [2, 4]))["type"] == "limit_exceeded"


# -- Multiply and broadcasting -------------------------------------------------------------------


def test_residual_broadcasts_as_torch_does(client) -> None:
    """[B, 1, D] + [B, T, D]: the body gives one token, the identity shortcut T of them."""
    layers = [{"type": "Residual", "layers": [{"type": "Mean", "dim": 1, "keepdim": True}]}]
    summary = post(client, layers, [2, 5, 4]).json()
    assert summary["output_shape"] == [2, 5, 4]
    x = torch.randn(2, 5, 4)
    model = trace_model(ModelSpec.model_validate({"layers": layers}), (2, 5, 4)).spec.build()
    torch.testing.assert_close(model(x), x.mean(1, keepdim=True) + x)


def test_residual_that_cannot_broadcast_is_a_422(client) -> None:
    layers = [{"type": "Residual", "layers": [{"type": "Linear", "out_features": 3}]}]
    e = error(post(client, layers, [2, 5, 4]))
    assert e["loc"] == [*LAYERS, 0, "layers"]
    assert "broadcast" in e["msg"]


def test_multiply_broadcasts_and_an_empty_branch_is_the_input(client) -> None:
    layers = [
        {"type": "Multiply", "branches": [[], [{"type": "Linear", "out_features": 1}, {"type": "Sigmoid"}]]}
    ]
    summary = post(client, layers, [2, 5, 4]).json()
    torch.manual_seed(0)
    reference = nn.Sequential(Multiply([nn.Sequential(), nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())]))
    assert summary["output_shape"] == [2, 5, 4]
    assert summary["total_params"] == count_params(reference)[0]
    model = trace_model(ModelSpec.model_validate({"layers": layers}), (2, 5, 4)).spec.build()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(model(x), reference(x))


def test_multiply_that_cannot_broadcast_is_a_422_at_the_branch(client) -> None:
    layers = [{"type": "Multiply", "branches": [[], [], [{"type": "Linear", "out_features": 3}]]}]
    e = error(post(client, layers, [2, 5, 4]))
    assert e["loc"] == [*LAYERS, 0, "branches", 2]


def test_squeeze_excitation_residual_equals_torch(client) -> None:
    """MobileNetV3's block shape: conv, then x * gate(x) inside a residual."""
    se = {
        "type": "Multiply",
        "branches": [
            [],
            [
                {"type": "AdaptiveAvgPool2d", "output_size": 1},
                {"type": "Conv2d", "out_channels": 2, "kernel_size": 1},
                {"type": "ReLU"},
                {"type": "Conv2d", "out_channels": 8, "kernel_size": 1},
                {"type": "Hardsigmoid"},
            ],
        ],
    }
    layers = [
        {
            "type": "Residual",
            "layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}, se],
        }
    ]
    summary = post(client, layers, [2, 8, 6, 6]).json()
    gate = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 8, 1), nn.Hardsigmoid()
    )
    body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), Multiply([nn.Sequential(), gate]))
    reference = nn.Sequential(Residual(body))
    assert summary["total_params"] == count_params(reference)[0]
    assert summary["model_repr"] == str(reference)
