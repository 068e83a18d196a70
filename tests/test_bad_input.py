"""Every class of bad input gets a clear 4xx in FastAPI's format, pointing at the layer; never a 500."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn
from torch_modules import CausalSelfAttention, Concat, Permute, PositionalEmbedding, Residual, Select

from app.core.config import settings
from app.schemas.jobs import JobCreate
from layers import ModelSpec
from layers.analysis.trace import trace_model
from layers.training.losses import AnyLoss
from layers.training.optimizers import AnyOptimizer

URL = "/v1/models/summary"
LAYERS = ["body", "model", "layers"]


def post(client, model: object, shape: object = (2, 3, 8, 8), **extra: object):
    return client.post(URL, json={"model": model, "input_shape": list(shape), **extra})


def detail(response, status: int = 422) -> dict:
    """The single error of a 4xx answer in FastAPI's ``{"detail": [{loc, msg, type}]}`` format."""
    assert response.status_code == status, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list) and errors, errors
    for error in errors:
        assert {"loc", "msg", "type"} <= set(error), error
    return errors[0]


# -- validation: the spec's JSON does not describe valid layers ---------------------------------


def test_unknown_type_points_at_the_layer_and_lists_the_types(client) -> None:
    error = detail(post(client, {"layers": [{"type": "ReLU"}, {"type": "Conv9d", "out_channels": 2}]}))
    assert error["loc"] == [*LAYERS, 1]
    assert error["type"] == "union_tag_invalid"
    assert "Conv9d" in error["msg"] and "'Conv2d'" in error["msg"]


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("Relu", "ReLU"),
        ("relu", "ReLU"),
        ("Layernorm", "LayerNorm"),
        ("Conv2D", "Conv2d"),
        ("RMSnorm", "RMSNorm"),
    ],
)
def test_unknown_type_suggests_the_closest_name(client, typo: str, meant: str) -> None:
    error = detail(post(client, {"layers": [{"type": "Flatten"}, {"type": typo}]}, (2, 3)))
    assert error["loc"] == [*LAYERS, 1]
    assert error["type"] == "union_tag_invalid"
    assert f"did you mean '{meant}'?" in error["msg"] and error["ctx"]["suggestion"] == meant


def test_unknown_type_far_from_every_name_suggests_nothing(client) -> None:
    error = detail(post(client, {"layers": [{"type": "Zzzzzz"}]}, (2, 3)))
    assert error["ctx"]["suggestion"] is None and "did you mean" not in error["msg"]


def test_unknown_type_inside_a_container_suggests_too(client) -> None:
    model = {"layers": [{"type": "Residual", "layers": [{"type": "Swiglu", "hidden_features": 4}]}]}
    error = detail(post(client, model, (2, 3)))
    assert error["loc"] == [*LAYERS, 0, "Residual", "layers", 0]
    assert error["ctx"]["suggestion"] == "SwiGLU"


@pytest.mark.parametrize(
    ("union", "typo", "meant"),
    [("loss", "CrossEntropy", "CrossEntropyLoss"), ("optimizer", "adamw", "AdamW")],
)
def test_unknown_loss_or_optimizer_suggests_too(union: str, typo: str, meant: str) -> None:
    with pytest.raises(ValidationError) as raised:
        TypeAdapter(AnyLoss if union == "loss" else AnyOptimizer).validate_python({"type": typo})
    (error,) = raised.value.errors()
    assert error["type"] == "union_tag_invalid" and error["ctx"]["suggestion"] == meant


def test_missing_type_is_rejected(client) -> None:
    error = detail(post(client, {"layers": [{"out_features": 3}]}))
    assert error["loc"][:4] == [*LAYERS, 0]


def test_misspelt_field_is_rejected_by_name(client) -> None:
    response = post(client, {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_featurs": 3}]})
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}
    assert errors[(*LAYERS, 1, "Linear", "out_featurs")] == "extra_forbidden"
    assert errors[(*LAYERS, 1, "Linear", "out_features")] == "missing"


def test_misspelt_field_inside_a_container(client) -> None:
    model = {
        "layers": [{"type": "Residual", "layers": [{"type": "ReLU"}, {"type": "ReLU", "inplace": True}]}]
    }
    error = detail(post(client, model))
    assert error["loc"] == [*LAYERS, 0, "Residual", "layers", 1, "ReLU", "inplace"]
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        ({"type": "Linear", "out_features": "ten"}, "out_features"),
        ({"type": "Linear", "out_features": 0}, "out_features"),
        ({"type": "Linear", "out_features": -3}, "out_features"),
        ({"type": "Linear", "out_features": 3.5}, "out_features"),
        ({"type": "Linear", "out_features": 1 << 40}, "out_features"),
        ({"type": "Linear", "out_features": 3, "bias": "maybe"}, "bias"),
        ({"type": "Dropout", "p": 1.5}, "p"),
        ({"type": "GELU", "approximate": "erf"}, "approximate"),
        ({"type": "ConvBlock", "out_channels": 4, "activation": "os.system"}, "activation"),
        ({"type": "Softmax", "dim": 99}, "dim"),
        ({"type": "LSTM", "hidden_size": 4, "num_layers": 0}, "num_layers"),
        ({"type": "Conv1d", "out_channels": 2, "kernel_size": [3, 3]}, "kernel_size"),
        ({"type": "Conv2d", "out_channels": 2, "kernel_size": 3, "stride": [1, 1, 1]}, "stride"),
        ({"type": "Conv2d", "out_channels": 2, "kernel_size": []}, "kernel_size"),
    ],
)
def test_wrong_field_type_or_range(client, layer: dict, field: str) -> None:
    error = detail(post(client, {"layers": [{"type": "Flatten"}, layer]}, (2, 3)))
    assert error["loc"] == [*LAYERS, 1, layer["type"], field]


# Issue 9's layers: each refusal points at the field that cannot be. Validation errors (the spec
# alone is wrong) carry the type tag in their loc; trace errors (wrong for this input) do not.
FIELD_ERRORS: dict[str, tuple[dict, tuple[int, ...], list]] = {
    "permute_repeats_a_dim": ({"type": "Permute", "dims": [0, 1, 1]}, (2, 3, 4), ["dims"]),
    "permute_wrong_rank": ({"type": "Permute", "dims": [1, 0]}, (2, 3, 4), ["dims"]),
    "transpose_dim_out_of_range": ({"type": "Transpose", "dim0": 1, "dim1": 3}, (2, 3, 4), ["dim1"]),
    "select_index_out_of_range": ({"type": "Select", "dim": 1, "index": 3}, (2, 3, 4), ["index"]),
    "select_negative_index_out_of_range": ({"type": "Select", "dim": -1, "index": -5}, (2, 3, 4), ["index"]),
    "select_dim_out_of_range": ({"type": "Select", "dim": 3, "index": 0}, (2, 3, 4), ["dim"]),
    "slice_keeps_nothing": ({"type": "Slice", "dim": 1, "start": 3}, (2, 3, 4), ["start"]),
    "slice_step_zero": ({"type": "Slice", "dim": 1, "step": 0}, (2, 3, 4), ["Slice", "step"]),
    "mean_dim_twice": ({"type": "Mean", "dim": [1, -2]}, (2, 3, 4), ["dim"]),
    "positions_longer_than_table": (
        {"type": "PositionalEmbedding", "num_positions": 4},
        (2, 5, 8),
        ["num_positions"],
    ),
    "positions_width_mismatch": (
        {"type": "PositionalEmbedding", "num_positions": 8, "embedding_dim": 6},
        (2, 5, 8),
        ["embedding_dim"],
    ),
    "sinusoids_longer_than_max_len": (
        {"type": "SinusoidalPositionalEncoding", "max_len": 4},
        (2, 5, 8),
        ["max_len"],
    ),
    "heads_do_not_divide_given_width": (
        {"type": "CausalSelfAttention", "embed_dim": 10, "num_heads": 4},
        (2, 5, 10),
        ["CausalSelfAttention", "num_heads"],
    ),
    "heads_do_not_divide_inferred_width": (
        {"type": "CausalSelfAttention", "num_heads": 3},
        (2, 5, 8),
        ["num_heads"],
    ),
    "kv_heads_do_not_divide_heads": (
        {"type": "CausalSelfAttention", "num_heads": 4, "num_kv_heads": 3},
        (2, 5, 8),
        ["CausalSelfAttention", "num_kv_heads"],
    ),
    "rope_needs_even_head_size": ({"type": "CausalSelfAttention", "num_heads": 2}, (2, 5, 6), ["rope"]),
    "upsample_size_and_scale": (
        {"type": "Upsample", "size": 8, "scale_factor": 2},
        (2, 3, 4, 4),
        ["Upsample", "scale_factor"],
    ),
    "upsample_neither": (
        {"type": "Upsample", "mode": "bilinear"},
        (2, 3, 4, 4),
        ["Upsample", "scale_factor"],
    ),
    "upsample_bilinear_on_3d": (
        {"type": "Upsample", "scale_factor": 2, "mode": "bilinear"},
        (2, 3, 4),
        ["mode"],
    ),
    "upsample_linear_on_4d": (
        {"type": "Upsample", "scale_factor": 2, "mode": "linear"},
        (2, 3, 4, 4),
        ["mode"],
    ),
    "upsample_align_corners_nearest": (
        {"type": "Upsample", "scale_factor": 2, "align_corners": True},
        (2, 3, 4, 4),
        ["Upsample", "align_corners"],
    ),
    "upsample_size_per_dim": ({"type": "Upsample", "size": [4, 4, 4]}, (2, 3, 4, 4), ["size"]),
    "upsample_scale_to_nothing": ({"type": "Upsample", "scale_factor": 0.1}, (2, 3, 4, 4), ["scale_factor"]),
    "pixel_shuffle_channels": (
        {"type": "PixelShuffle", "upscale_factor": 2},
        (2, 6, 4, 4),
        ["upscale_factor"],
    ),
    "prelu_channels": ({"type": "PReLU", "num_parameters": 4}, (2, 3, 4), ["num_parameters"]),
    "softplus_beta_zero": ({"type": "Softplus", "beta": 0}, (2, 3), ["Softplus", "beta"]),
    "encoder_activation": (
        {"type": "TransformerEncoderLayer", "nhead": 1, "activation": "swish"},
        (2, 3, 4),
        ["TransformerEncoderLayer", "activation"],
    ),
    # -- issue 18's smaller gaps --
    "bias_kv_with_causal": (
        {"type": "MultiheadAttention", "num_heads": 2, "causal": True, "add_bias_kv": True},
        (2, 3, 4),
        ["MultiheadAttention", "add_bias_kv"],
    ),
    "out_bias_not_a_boolean": (
        {"type": "CausalSelfAttention", "num_heads": 2, "out_bias": "maybe"},
        (2, 3, 4),
        ["CausalSelfAttention", "out_bias"],
    ),
    "ceil_mode_not_a_boolean": (
        {"type": "AvgPool1d", "kernel_size": 2, "ceil_mode": "maybe"},
        (2, 3, 4),
        ["AvgPool1d", "ceil_mode"],
    ),
    "stochastic_depth_without_p": ({"type": "StochasticDepth"}, (2, 3), ["StochasticDepth", "p"]),
    "stochastic_depth_p_over_one": ({"type": "StochasticDepth", "p": 1.5}, (2, 3), ["StochasticDepth", "p"]),
    "stochastic_depth_mode": (
        {"type": "StochasticDepth", "p": 0.1, "mode": "column"},
        (2, 3),
        ["StochasticDepth", "mode"],
    ),
    "layer_scale_dim_mismatch": ({"type": "LayerScale", "dim": 4}, (2, 3), ["dim"]),
}


@pytest.mark.parametrize("case", sorted(FIELD_ERRORS))
def test_new_layer_fields_are_refused_at_their_loc(client, case: str) -> None:
    layer, shape, field_loc = FIELD_ERRORS[case]
    error = detail(post(client, {"layers": [{"type": "Identity"}, layer]}, shape))
    assert error["loc"] == [*LAYERS, 1, *field_loc], error
    assert error["msg"]


def test_qkv_bias_takes_one_flag_or_one_per_projection(client) -> None:
    layer = {"type": "CausalSelfAttention", "num_heads": 2, "qkv_bias": [True, False]}
    errors = client.post(URL, json={"model": {"layers": [layer]}, "input_shape": [2, 5, 8]}).json()["detail"]
    listed = [e for e in errors if e["loc"] == [*LAYERS, 0, "CausalSelfAttention", "qkv_bias", "list[bool]"]]
    assert listed and "at least 3 items" in listed[0]["msg"], errors


def test_field_that_contradicts_another(client) -> None:
    layer = {"type": "MultiheadAttention", "embed_dim": 10, "num_heads": 3}
    error = detail(post(client, {"layers": [layer]}, (2, 5, 10)))
    assert error["loc"][:5] == [*LAYERS, 0, "MultiheadAttention"]
    assert "divisible" in error["msg"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": {"layers": []}, "input_shape": [2, 3]},
        {"model": {"layers": {"type": "ReLU"}}, "input_shape": [2, 3]},
        {"model": {"layers": [{"type": "ReLU"}]}},
        {"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [2, 3], "device": "cuda"},
        {"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [2, 3], "input_dtype": "complex64"},
        {"model": {"layers": [{"type": "Residual", "layers": []}]}, "input_shape": [2, 3]},
        {
            "model": {"layers": [{"type": "Residual", "layers": [{"type": "ReLU"}], "shortcut": []}]},
            "input_shape": [2, 3],
        },
        {"model": {"layers": [{"type": "Concat", "branches": []}]}, "input_shape": [2, 3]},
        [1, 2, 3],
        "a string",
    ],
)
def test_malformed_request_bodies(client, body: object) -> None:
    detail(client.post(URL, json=body))


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"model": {"layers": [}', b"\xff\xfe", b"null", b"NaN", b"-Infinity"]
)
def test_unparseable_json(client, raw: bytes) -> None:
    detail(client.post(URL, content=raw, headers={"content-type": "application/json"}))


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        ('{"type": "LeakyReLU", "negative_slope": NaN}', "negative_slope"),
        ('{"type": "LayerNorm", "eps": Infinity}', "eps"),
        ('{"type": "Dropout", "p": NaN}', "p"),
        ('{"type": "ELU", "alpha": -Infinity}', "alpha"),
    ],
)
def test_nan_and_infinity_are_rejected_not_a_500(client, layer: str, field: str) -> None:
    """Python's JSON parser accepts NaN/Infinity; they must be a 422, not a crash echoing them."""
    raw = '{"model": {"layers": [' + layer + ']}, "input_shape": [2, 3]}'
    error = detail(client.post(URL, content=raw, headers={"content-type": "application/json"}))
    assert error["loc"][:4] == [*LAYERS, 0] and error["loc"][-1] == field


def test_nan_in_the_input_shape_is_a_422(client) -> None:
    raw = '{"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [2, NaN]}'
    error = detail(client.post(URL, content=raw, headers={"content-type": "application/json"}))
    assert error["loc"][:2] == ["body", "input_shape"]


# -- input shape limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        [],
        [2, 0, 4],
        [2, -3],
        [2, "three"],
        [2, 3.5],
        [1] * (settings.max_input_rank + 1),
        [1, settings.max_input_dim + 1],
        [settings.max_input_dim] * 3,  # every dimension allowed, the element count is not
    ],
)
def test_input_shape_limits(client, shape: list) -> None:
    error = detail(client.post(URL, json={"model": {"layers": [{"type": "ReLU"}]}, "input_shape": shape}))
    assert error["loc"][:2] == ["body", "input_shape"]


def test_input_at_the_limits_is_accepted(client) -> None:
    shape = [1] * (settings.max_input_rank - 2) + [settings.max_input_dim, 1]
    response = client.post(URL, json={"model": {"layers": [{"type": "Flatten"}]}, "input_shape": shape})
    assert response.status_code == 200, response.text


def test_input_numel_limit_is_a_setting(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_input_numel", 100)
    error = detail(post(client, {"layers": [{"type": "ReLU"}]}, (11, 10)))
    assert error["loc"] == ["body", "input_shape"] and "100" in error["msg"]
    assert post(client, {"layers": [{"type": "ReLU"}]}, (10, 10)).status_code == 200


# -- shape mismatches found while tracing ----------------------------------------------------


def test_linear_in_features_mismatch_names_layer_sizes_and_trace(client) -> None:
    model = {
        "layers": [
            {"type": "Conv2d", "out_channels": 6, "kernel_size": 3},
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 100, "out_features": 10},
        ]
    }
    error = detail(post(client, model, (2, 3, 6, 6)))
    assert error["type"] == "shape_mismatch"
    assert error["loc"] == [*LAYERS, 2, "in_features"]
    msg = error["msg"]
    assert "Linear" in msg and "100" in msg and "96" in msg  # the layer, expected and got
    assert "[2, 3, 6, 6]" in msg and "[2, 6, 4, 4]" in msg and "[2, 96]" in msg  # shapes traced so far
    assert error["ctx"]["expected"] == 100 and error["ctx"]["got"] == 96
    assert [t["output_shape"] for t in error["ctx"]["traced"]] == [[2, 6, 4, 4], [2, 96]]


def test_linear_receiving_2x96(client) -> None:
    error = detail(
        post(client, {"layers": [{"type": "Linear", "in_features": 100, "out_features": 3}]}, (2, 96))
    )
    assert error["loc"] == [*LAYERS, 0, "in_features"]
    assert all(s in error["msg"] for s in ("Linear", "100", "96", "[2, 96]"))


def test_conv_in_channels_mismatch(client) -> None:
    layer = {"type": "Conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3}
    error = detail(post(client, {"layers": [{"type": "ReLU"}, layer]}, (2, 3, 8, 8)))
    assert error["loc"] == [*LAYERS, 1, "in_channels"]
    assert "Conv2d" in error["msg"] and "4" in error["msg"] and "got 3" in error["msg"]
    assert "[2, 3, 8, 8]" in error["msg"]


def test_kernel_larger_than_input(client) -> None:
    model = {
        "layers": [
            {"type": "MaxPool2d", "kernel_size": 2},
            {"type": "Conv2d", "out_channels": 2, "kernel_size": 5},
        ]
    }
    error = detail(post(client, model, (2, 3, 8, 8)))
    assert error["loc"] == [*LAYERS, 1]
    msg = error["msg"]
    assert "Conv2d" in msg and "(5 x 5)" in msg and "(4 x 4)" in msg and "[2, 3, 4, 4]" in msg


def test_mismatch_deep_inside_containers_points_at_the_child(client) -> None:
    model = {
        "layers": [
            {
                "type": "Residual",
                "layers": [
                    {
                        "type": "Sequential",
                        "layers": [
                            {"type": "Flatten"},
                            {"type": "Linear", "in_features": 5, "out_features": 2},
                        ],
                    }
                ],
            }
        ]
    }
    error = detail(post(client, model, (2, 3, 4)))
    assert error["loc"] == [*LAYERS, 0, "layers", 0, "layers", 1, "in_features"]
    assert "0.layers.0.1" in error["msg"] and "12" in error["msg"]


def test_residual_shape_mismatch(client) -> None:
    model = {
        "layers": [{"type": "Residual", "layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 1}]}]
    }
    error = detail(post(client, model))
    assert error["loc"] == [*LAYERS, 0, "layers"]
    assert "[2, 8, 8, 8]" in error["msg"] and "[2, 3, 8, 8]" in error["msg"] and "shortcut" in error["msg"]


def test_residual_shortcut_mismatch(client) -> None:
    model = {
        "layers": [
            {
                "type": "Residual",
                "layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}],
                "shortcut": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 1, "stride": 2}],
            }
        ]
    }
    error = detail(post(client, model))
    assert error["loc"] == [*LAYERS, 0, "shortcut"]
    assert "[2, 8, 8, 8]" in error["msg"] and "[2, 8, 4, 4]" in error["msg"]


def test_concat_mismatch_points_at_the_branch(client) -> None:
    model = {
        "layers": [
            {
                "type": "Concat",
                "branches": [
                    [{"type": "Identity"}],
                    [{"type": "Identity"}],
                    [{"type": "MaxPool2d", "kernel_size": 2}],
                ],
            }
        ]
    }
    error = detail(post(client, model))
    assert error["loc"] == [*LAYERS, 0, "branches", 2]
    assert "[2, 3, 8, 8]" in error["msg"] and "[2, 3, 4, 4]" in error["msg"]


def test_concat_dim_out_of_range(client) -> None:
    model = {
        "layers": [{"type": "Concat", "dim": 5, "branches": [[{"type": "Identity"}], [{"type": "Identity"}]]}]
    }
    error = detail(post(client, model, (2, 3)))
    assert error["loc"][:4] == [*LAYERS, 0]


# Specs that real PyTorch refuses when the same module runs on a real tensor. Each pairs the spec
# with the hand-written torch model; the test proves torch raises AND the API answers 422 at the
# right layer (never 200 for a model that cannot run, never 500).
REFUSED: dict[str, tuple[list[dict], list[int], str, Callable[[], nn.Module], int]] = {
    "int_into_linear": ([{"type": "Linear", "out_features": 3}], [2, 5], "int64", lambda: nn.Linear(5, 3), 0),
    "int_into_linear_after_relu": (
        [{"type": "Flatten"}, {"type": "Linear", "out_features": 3}],
        [2, 5],
        "int32",
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(5, 3)),
        1,
    ),
    "int_into_gelu": ([{"type": "GELU"}], [2, 5], "int64", nn.GELU, 0),
    "int_into_softmax": ([{"type": "Softmax"}], [2, 5], "int64", lambda: nn.Softmax(-1), 0),
    "int_into_conv": (
        [{"type": "Conv1d", "out_channels": 2, "kernel_size": 1}],
        [2, 3, 4],
        "int64",
        lambda: nn.Conv1d(3, 2, 1),
        0,
    ),
    "int_into_attention": (
        [{"type": "MultiheadAttention", "num_heads": 1}],
        [2, 3, 4],
        "int64",
        lambda: nn.TransformerEncoderLayer(4, 1, 8, batch_first=True),
        0,
    ),
    "float_into_embedding": (
        [{"type": "Embedding", "num_embeddings": 5, "embedding_dim": 2}],
        [2, 5],
        "float32",
        lambda: nn.Embedding(5, 2),
        0,
    ),
    "batchnorm1d_one_value_per_channel": (
        [{"type": "BatchNorm1d"}],
        [1, 4],
        "float32",
        lambda: nn.BatchNorm1d(4),
        0,
    ),
    "batchnorm2d_one_value_per_channel": (
        [{"type": "BatchNorm2d"}],
        [1, 3, 1, 1],
        "float32",
        lambda: nn.BatchNorm2d(3),
        0,
    ),
    "layernorm_wrong_trailing_dims": (
        [{"type": "LayerNorm", "normalized_shape": [4, 5]}],
        [2, 5, 4],
        "float32",
        lambda: nn.LayerNorm([4, 5]),
        0,
    ),
    "groupnorm_indivisible": (
        [{"type": "GroupNorm", "num_groups": 4}],
        [2, 6, 3],
        "float32",
        lambda: nn.GroupNorm(4, 6),
        0,
    ),
    "lstm_rank4": (
        [{"type": "LSTM", "hidden_size": 3}],
        [2, 3, 4, 5],
        "float32",
        lambda: nn.LSTM(5, 3, batch_first=True),
        0,
    ),
    "unflatten_wrong_product": (
        [{"type": "Unflatten", "dim": 1, "unflattened_size": [4, 4]}],
        [2, 12],
        "float32",
        lambda: nn.Unflatten(1, (4, 4)),
        0,
    ),
    "flatten_start_after_end": (
        [{"type": "Flatten", "start_dim": 2, "end_dim": 1}],
        [2, 3, 4],
        "float32",
        lambda: nn.Flatten(2, 1),
        0,
    ),
    "pool_output_empty": (
        [{"type": "MaxPool2d", "kernel_size": 9}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.MaxPool2d(9),
        0,
    ),
    "avgpool_padding_over_half_kernel": (
        [{"type": "AvgPool2d", "kernel_size": 2, "padding": 2}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.AvgPool2d(2, padding=2),
        0,
    ),
    "conv_same_padding_with_stride": (
        [{"type": "Conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": "same"}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.Conv2d(3, 2, 3, stride=2, padding="same"),
        0,
    ),
    "conv_groups_do_not_divide": (
        [{"type": "Conv2d", "out_channels": 4, "kernel_size": 1, "groups": 2}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.Conv2d(3, 4, 1, groups=2),
        0,
    ),
    "conv_kernel_of_wrong_rank": (
        [{"type": "Conv2d", "out_channels": 2, "kernel_size": [3, 3, 3]}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.Conv2d(3, 2, (3, 3, 3)),
        0,
    ),
    "transpose_output_padding_too_big": (
        [{"type": "ConvTranspose2d", "out_channels": 2, "kernel_size": 3, "stride": 1, "output_padding": 1}],
        [2, 3, 8, 8],
        "float32",
        lambda: nn.ConvTranspose2d(3, 2, 3, stride=1, output_padding=1),
        0,
    ),
    "embedding_padding_idx_out_of_range": (
        [{"type": "Embedding", "num_embeddings": 5, "embedding_dim": 2, "padding_idx": 7}],
        [2, 5],
        "int64",
        lambda: nn.Embedding(5, 2, padding_idx=7),
        0,
    ),
    "residual_add_mismatch": (
        [{"type": "Residual", "layers": [{"type": "Linear", "out_features": 4}]}],
        [2, 3],
        "float32",
        lambda: Residual(nn.Sequential(nn.Linear(3, 4))),
        0,
    ),
    "concat_mismatch": (
        [
            {
                "type": "Concat",
                "dim": 1,
                "branches": [[{"type": "Identity"}], [{"type": "Flatten", "start_dim": 0}]],
            }
        ],
        [2, 3],
        "float32",
        lambda: Concat([nn.Sequential(nn.Identity()), nn.Sequential(nn.Flatten(0))], dim=1),
        0,
    ),
    "permute_not_a_permutation": (
        [{"type": "Permute", "dims": [0, 2, 2]}],
        [2, 3, 4],
        "float32",
        lambda: Permute((0, 2, 2)),
        0,
    ),
    "select_out_of_range": (
        [{"type": "Select", "dim": 1, "index": 3}],
        [2, 3, 4],
        "float32",
        lambda: Select(1, 3),
        0,
    ),
    "more_positions_than_the_table": (
        [{"type": "PositionalEmbedding", "num_positions": 4}],
        [2, 5, 8],
        "float32",
        lambda: PositionalEmbedding(4, 8),
        0,
    ),
    "attention_heads_do_not_divide": (
        [{"type": "CausalSelfAttention", "num_heads": 3}],
        [2, 5, 8],
        "float32",
        lambda: CausalSelfAttention(8, 3),
        0,
    ),
    "upsample_bilinear_on_a_sequence": (
        [{"type": "Upsample", "scale_factor": 2, "mode": "bilinear"}],
        [2, 3, 4],
        "float32",
        lambda: nn.Upsample(scale_factor=2.0, mode="bilinear"),
        0,
    ),
    "upsample_both_size_and_scale": (
        [{"type": "Upsample", "size": 8, "scale_factor": 2}],
        [2, 3, 4, 4],
        "float32",
        lambda: nn.Upsample(size=8, scale_factor=2.0),
        0,
    ),
    "pixel_shuffle_indivisible": (
        [{"type": "PixelShuffle", "upscale_factor": 2}],
        [2, 6, 4, 4],
        "float32",
        lambda: nn.PixelShuffle(2),
        0,
    ),
    "prelu_wrong_channels": (
        [{"type": "PReLU", "num_parameters": 4}],
        [2, 3, 4],
        "float32",
        lambda: nn.PReLU(4),
        0,
    ),
    "instance_norm_one_spatial_element": (
        [{"type": "InstanceNorm2d"}],
        [2, 3, 1, 1],
        "float32",
        lambda: nn.InstanceNorm2d(3),
        0,
    ),
    "int_into_rmsnorm": ([{"type": "RMSNorm"}], [2, 5], "int64", lambda: nn.RMSNorm(5), 0),
    "prelu_init_past_float32": (
        [{"type": "PReLU", "init": 1e300}],
        [2, 3],
        "float32",
        lambda: nn.PReLU(1, 1e300),
        0,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_torch_refuses_is_a_422_at_that_layer(client, case: str) -> None:
    layers, shape, dtype, reference, index = REFUSED[case]
    x = (
        torch.randint(0, 5, shape, dtype=getattr(torch, dtype))
        if dtype.startswith("int")
        else torch.randn(shape)
    )
    with pytest.raises((RuntimeError, ValueError, AssertionError, TypeError, IndexError)):
        reference()(x)  # construction or the forward pass fails in PyTorch itself
    error = detail(post(client, {"layers": layers}, shape, input_dtype=dtype))
    assert error["loc"][:4] == [*LAYERS, index], error
    assert layers[index]["type"] in error["msg"] or error["loc"][4:5] == [layers[index]["type"]], error


# -- values torch cannot hold: a float field that becomes a parameter, in the parameters' dtype --


def test_a_prelu_init_past_float32_is_refused_by_every_route(client) -> None:
    """It was a 200 summary, exported code that died, a 500 ONNX export and a job that failed."""
    model = {
        "layers": [
            {"type": "Flatten"},
            {"type": "PReLU", "init": -1e300},
            {"type": "Linear", "out_features": 10},
        ]
    }
    for url, extra in [
        (URL, {}),
        ("/v1/models/export", {"format": "pytorch"}),
        ("/v1/models/export", {"format": "onnx"}),
    ]:
        error = detail(client.post(url, json={"model": model, "input_shape": [2, 1, 8, 8], **extra}))
        assert error["loc"] == [*LAYERS, 1, "PReLU", "init"] and error["type"] == "float32_overflow", error
        assert "from -3.40282e+38 to 3.40282e+38; got -1e+300" in error["msg"], error
    job = {
        "model": model,
        "dataset": {"name": "digits"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "Adam"},
    }
    with pytest.raises(ValidationError) as raised:
        JobCreate.model_validate_json(json.dumps(job))
    assert [e["loc"] for e in raised.value.errors()] == [("model", "layers", 1, "PReLU", "init")]


def test_the_largest_float32_init_builds_what_torch_builds(client) -> None:
    largest = float(torch.finfo(torch.float32).max)
    for init in (largest, -largest):
        assert post(client, {"layers": [{"type": "PReLU", "init": init}]}, (2, 3)).status_code == 200
        traced = trace_model(ModelSpec(layers=[{"type": "PReLU", "init": init}]), (2, 3))
        torch.testing.assert_close(traced.spec.build()[0].weight, nn.PReLU(1, init).weight)


@pytest.mark.parametrize(
    ("dtype", "fits", "too_big"), [("float16", 65504.0, 1e5), ("bfloat16", 3.38e38, 3.4e38)]
)
def test_an_init_past_the_parameter_dtype_is_refused_at_the_field(
    client, dtype: str, fits: float, too_big: float
) -> None:
    """Parameters follow a floating input's dtype: a float16 PReLU cannot start at 1e5 (torch
    makes it inf)."""
    assert not nn.PReLU(1, too_big).to(getattr(torch, dtype)).weight.isfinite().all()
    for url, extra in [
        (URL, {}),
        ("/v1/models/export", {"format": "pytorch"}),
        ("/v1/models/export", {"format": "onnx"}),
    ]:
        body = {
            "model": {"layers": [{"type": "PReLU", "init": too_big}]},
            "input_shape": [2, 3],
            "input_dtype": dtype,
            **extra,
        }
        error = detail(client.post(url, json=body))
        assert error["loc"] == [*LAYERS, 0, "init"], error
        assert dtype in error["msg"] and error["ctx"]["dtype"] == dtype, error
    assert (
        post(client, {"layers": [{"type": "PReLU", "init": fits}]}, (2, 3), input_dtype=dtype).status_code
        == 200
    )
    traced = trace_model(ModelSpec(layers=[{"type": "PReLU", "init": fits}]), (2, 3), dtype)
    ours = traced.spec.build().to(traced.param_dtype)[0].weight
    torch.testing.assert_close(ours, nn.PReLU(1, fits).to(getattr(torch, dtype)).weight)
    assert bool(ours.isfinite().all())


def test_a_rope_theta_past_float32_is_refused(client) -> None:
    """torch computes the rotary tables in float32: a base of 1e39 turns inf, and every frequency
    but the first becomes 0 (1e39 ** -0.5 is 3.2e-20, which float32 holds)."""
    assert (1e39 ** (-torch.arange(0, 4, 2, dtype=torch.float32) / 4)).tolist() == [1.0, 0.0]
    layer = {"type": "CausalSelfAttention", "num_heads": 2, "rope_theta": 1e39}
    error = detail(post(client, {"layers": [layer]}, (2, 4, 8)))
    assert error["loc"] == [*LAYERS, 0, "CausalSelfAttention", "rope_theta"], error
    assert post(client, {"layers": [{**layer, "rope_theta": 3e38}]}, (2, 4, 8)).status_code == 200


# -- limits: layer count and container nesting (settings, checked before building) ------------


def nested(depth: int) -> dict:
    layer: dict = {"type": "ReLU"}
    for _ in range(depth):
        layer = {"type": "Sequential", "layers": [layer]}
    return layer


def test_too_many_layers(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_layers", 5)
    assert post(client, {"layers": [{"type": "ReLU"}] * 5}).status_code == 200
    error = detail(post(client, {"layers": [{"type": "ReLU"}] * 6}))
    assert error["type"] == "limit_exceeded"
    assert error["loc"] == [*LAYERS, 5]
    assert "5" in error["msg"]


def test_container_children_count_toward_the_layer_limit(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_layers", 5)
    model = {"layers": [{"type": "ReLU"}, {"type": "Sequential", "layers": [{"type": "ReLU"}] * 4}]}
    error = detail(post(client, model))
    assert error["type"] == "limit_exceeded"
    assert error["loc"] == [*LAYERS, 1, "layers", 3]


def test_too_deep_container_nesting(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_nesting", 3)
    assert post(client, {"layers": [nested(3)]}).status_code == 200
    error = detail(post(client, {"layers": [nested(4)]}))
    assert error["type"] == "limit_exceeded"
    assert error["loc"] == [*LAYERS, 0, "layers", 0, "layers", 0, "layers", 0, "layers", 0]
    assert "3" in error["msg"]


def test_default_nesting_limit_within_the_json_depth_limit(client) -> None:
    # 20 nested containers fit the body's JSON depth limit, but not the container nesting limit
    error = detail(post(client, {"layers": [nested(settings.max_nesting + 4)]}))
    assert error["type"] == "limit_exceeded"
    assert len(error["loc"]) == 3 + 1 + 2 * (settings.max_nesting + 1)


# -- abuse: huge bodies, deep nesting, pathological JSON text ----------------------------------


def test_body_over_the_limit_is_413(client) -> None:
    layers = [{"type": "ReLU"}] * (settings.max_body_bytes // 15)
    error = detail(post(client, {"layers": layers}), 413)
    assert error["loc"] == ["body"] and error["type"] == "body_too_large"


def test_20_mb_body_is_413(client) -> None:
    body = b'{"model": {"layers": [' + b'{"type": "ReLU"},' * (20 * 2**20 // 17) + b'{"type": "ReLU"}]}}'
    assert len(body) > 20 * 2**20
    detail(client.post(URL, content=body, headers={"content-type": "application/json"}), 413)


def test_a_million_layers_is_rejected_by_body_size(client) -> None:
    body = json.dumps({"model": {"layers": [{"type": "ReLU"}] * 1_000_000}, "input_shape": [2, 3]})
    detail(client.post(URL, content=body, headers={"content-type": "application/json"}), 413)


def test_chunked_body_without_length_is_cut_off(client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": {"layers": ['
        for _ in range(settings.max_body_bytes // 2**16 + 2):
            yield b'{"type": "ReLU"},' * (2**16 // 17 + 1)

    detail(client.post(URL, content=chunks(), headers={"content-type": "application/json"}), 413)


@pytest.mark.parametrize("depth", [settings.max_json_depth + 1, 3000, 100_000])
def test_deep_json_nesting_is_rejected_before_parsing(client, depth: int) -> None:
    body = b'{"model": {"layers": ' + b"[" * depth + b"]" * depth + b'}, "input_shape": [2]}'
    error = detail(client.post(URL, content=body, headers={"content-type": "application/json"}))
    assert error["loc"] == ["body"] and error["type"] == "json_too_deep"


def test_brackets_inside_strings_do_not_count_as_depth(client) -> None:
    model = {"layers": [{"type": "ReLU" + "[" * 200}]}
    error = detail(post(client, model))
    assert error["type"] == "union_tag_invalid"


PATHOLOGICAL_BODIES = {
    # an unterminated string full of escaped quotes: every quote starts a new string candidate
    "escaped_quotes": b'{"model": "' + b'\\"' * 300_000,
    "backslashes": b'{"model": "' + b"\\\\" * 300_000 + b"\\",
    "quotes": b'"' * 900_000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL_BODIES))
def test_pathological_json_text_is_answered(name: str) -> None:
    """Bodies under the size limit whose text makes a naive scanner quadratic. The middleware runs
    on the event loop, so a slow scan would stall every request: each must be answered at once.
    Run in a child process so a regression fails with a timeout instead of hanging the suite."""
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from app.main import app\n"
        "body = sys.stdin.buffer.read()\n"
        "headers = {'content-type': 'application/json'}\n"
        "r = TestClient(app).post('/v1/models/summary', content=body, headers=headers)\n"
        "print(r.status_code)\n"
    )
    body = PATHOLOGICAL_BODIES[name]
    done = subprocess.run(
        [sys.executable, "-c", code], input=body, capture_output=True, timeout=120, check=True, cwd=_ROOT
    )
    assert done.stdout.strip() in (b"413", b"422"), done


_ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[1])
