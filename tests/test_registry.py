"""Every registered layer type, built through the API and compared with PyTorch itself.

Parametrised over ``layers.LAYER_SPECS``: a layer type added to the registry without a sample
below fails ``test_layer_matches_torch`` until someone writes one. Each sample is a spec, an
input shape and the same module written by hand with ``torch.nn``; the test compares
``print(model)``, parameter names and shapes, counts, FLOPs, every output shape (a real forward
pass on a small real tensor), the inferred sizes, and finally loads the hand-written module's
weights into the model built from the spec and checks both compute the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch_modules import (
    GRU,
    LSTM,
    RNN,
    Bilinear,
    CausalSelfAttention,
    ClassToken,
    Concat,
    ConvBlock,
    LayerScale,
    Mean,
    Multiply,
    MyConv2d,
    MyLinear,
    Permute,
    PositionalEmbedding,
    Residual,
    Select,
    SelfAttention,
    SinusoidalPositionalEncoding,
    Slice,
    StochasticDepth,
    SwiGLU,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    Transpose,
    count_params,
    flop_count,
    last_step,
    output_shapes,
    with_state,
)

from layers import LAYER_SPECS, ModelSpec
from layers.analysis.trace import DTYPES, trace_model
from layers.language.spec import accepts


@dataclass
class Sample:
    spec: dict[str, Any]
    input_shape: list[int]
    reference: Callable[[], nn.Module]  # the same layer, written by hand in torch
    inferred: dict[str, Any] = field(default_factory=dict)  # sizes the summary must fill in
    input_dtype: str = "float32"
    # A graph node's sample: the shapes of the tensor arguments it is given by name (a decoder's
    # memory, masks, an initial state). Such a layer (one needing them, or returning several
    # tensors) is refused in a sequence, and compared with torch on its own, given them.
    tensors: dict[str, list[int]] | None = None


SAMPLES: dict[str, Sample] = {
    "Linear": Sample(
        {"type": "Linear", "out_features": 5}, [2, 10], lambda: nn.Linear(10, 5), {"in_features": 10}
    ),
    "Bilinear": Sample(
        {"type": "Bilinear", "out_features": 3},
        [2, 4],
        lambda: Bilinear(4, 4, 3),
        {"in1_features": 4, "in2_features": 4},
    ),
    "Identity": Sample({"type": "Identity"}, [2, 3], nn.Identity),
    "Flatten": Sample(
        {"type": "Flatten", "start_dim": 1, "end_dim": 2}, [2, 3, 4, 5], lambda: nn.Flatten(1, 2)
    ),
    "Unflatten": Sample(
        {"type": "Unflatten", "dim": 1, "unflattened_size": [3, -1]},
        [2, 12],
        lambda: nn.Unflatten(1, (3, -1)),
    ),
    "Embedding": Sample(
        {"type": "Embedding", "num_embeddings": 20, "embedding_dim": 6, "padding_idx": 0},
        [2, 7],
        lambda: nn.Embedding(20, 6, padding_idx=0),
        input_dtype="int64",
    ),
    "Conv1d": Sample(
        {"type": "Conv1d", "out_channels": 6, "kernel_size": 3, "padding": 1},
        [2, 4, 10],
        lambda: nn.Conv1d(4, 6, 3, padding=1),
        {"in_channels": 4},
    ),
    "Conv2d": Sample(
        {
            "type": "Conv2d",
            "out_channels": 8,
            "kernel_size": [3, 5],
            "stride": 2,
            "padding": [1, 2],
            "groups": 2,
        },
        [2, 4, 9, 9],
        lambda: nn.Conv2d(4, 8, (3, 5), stride=2, padding=(1, 2), groups=2),
        {"in_channels": 4},
    ),
    "ConvTranspose2d": Sample(
        {"type": "ConvTranspose2d", "out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1},
        [2, 6, 5, 5],
        lambda: nn.ConvTranspose2d(6, 3, 4, stride=2, padding=1),
        {"in_channels": 6},
    ),
    "MaxPool1d": Sample({"type": "MaxPool1d", "kernel_size": 2}, [2, 3, 8], lambda: nn.MaxPool1d(2)),
    "MaxPool2d": Sample(
        {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1},
        [2, 3, 9, 9],
        lambda: nn.MaxPool2d(3, 2, 1),
    ),
    "AvgPool1d": Sample(
        {"type": "AvgPool1d", "kernel_size": 3, "stride": 1}, [2, 3, 8], lambda: nn.AvgPool1d(3, 1)
    ),
    "AvgPool2d": Sample(
        {"type": "AvgPool2d", "kernel_size": [2, 2]}, [2, 3, 8, 8], lambda: nn.AvgPool2d((2, 2))
    ),
    "AdaptiveAvgPool1d": Sample(
        {"type": "AdaptiveAvgPool1d", "output_size": 4}, [2, 3, 10], lambda: nn.AdaptiveAvgPool1d(4)
    ),
    "AdaptiveAvgPool2d": Sample(
        {"type": "AdaptiveAvgPool2d", "output_size": [3, 2]},
        [2, 3, 9, 9],
        lambda: nn.AdaptiveAvgPool2d((3, 2)),
    ),
    "AdaptiveMaxPool2d": Sample(
        {"type": "AdaptiveMaxPool2d", "output_size": 1}, [2, 3, 9, 9], lambda: nn.AdaptiveMaxPool2d(1)
    ),
    "Dropout": Sample({"type": "Dropout", "p": 0.2}, [2, 5], lambda: nn.Dropout(0.2)),
    "Dropout2d": Sample({"type": "Dropout2d", "p": 0.3}, [2, 3, 4, 4], lambda: nn.Dropout2d(0.3)),
    "BatchNorm1d": Sample({"type": "BatchNorm1d"}, [4, 6], lambda: nn.BatchNorm1d(6), {"num_features": 6}),
    "BatchNorm2d": Sample(
        {"type": "BatchNorm2d", "momentum": 0.2},
        [2, 5, 4, 4],
        lambda: nn.BatchNorm2d(5, momentum=0.2),
        {"num_features": 5},
    ),
    "LayerNorm": Sample(
        {"type": "LayerNorm"}, [2, 3, 8], lambda: nn.LayerNorm([8]), {"normalized_shape": [8]}
    ),
    "GroupNorm": Sample(
        {"type": "GroupNorm", "num_groups": 2}, [2, 6, 4, 4], lambda: nn.GroupNorm(2, 6), {"num_channels": 6}
    ),
    "ReLU": Sample({"type": "ReLU"}, [2, 5], nn.ReLU),
    "LeakyReLU": Sample({"type": "LeakyReLU", "negative_slope": 0.2}, [2, 5], lambda: nn.LeakyReLU(0.2)),
    "ELU": Sample({"type": "ELU", "alpha": 0.5}, [2, 5], lambda: nn.ELU(0.5)),
    "GELU": Sample({"type": "GELU", "approximate": "tanh"}, [2, 5], lambda: nn.GELU(approximate="tanh")),
    "SiLU": Sample({"type": "SiLU"}, [2, 5], nn.SiLU),
    "Sigmoid": Sample({"type": "Sigmoid"}, [2, 5], nn.Sigmoid),
    "Tanh": Sample({"type": "Tanh"}, [2, 5], nn.Tanh),
    "Softmax": Sample({"type": "Softmax", "dim": 1}, [2, 5, 3], lambda: nn.Softmax(dim=1)),
    "LogSoftmax": Sample({"type": "LogSoftmax"}, [2, 5], lambda: nn.LogSoftmax(dim=-1)),
    "RNN": Sample(
        {"type": "RNN", "hidden_size": 7, "num_layers": 2, "nonlinearity": "relu"},
        [2, 5, 4],
        lambda: RNN(4, 7, num_layers=2, nonlinearity="relu", batch_first=True),
        {"input_size": 4},
    ),
    "LSTM": Sample(
        {"type": "LSTM", "hidden_size": 6, "bidirectional": True, "proj_size": 3},
        [2, 5, 4],
        lambda: LSTM(4, 6, bidirectional=True, proj_size=3, batch_first=True),
        {"input_size": 4},
    ),
    "GRU": Sample(
        {"type": "GRU", "hidden_size": 5, "output": "last"},
        [2, 5, 4],
        lambda: last_step(GRU(4, 5, batch_first=True)),
        {"input_size": 4},
    ),
    "MultiheadAttention": Sample(
        {"type": "MultiheadAttention", "num_heads": 2},
        [2, 5, 8],
        lambda: SelfAttention(8, 2, batch_first=True),
        {"embed_dim": 8},
    ),
    "TransformerEncoderLayer": Sample(
        {
            "type": "TransformerEncoderLayer",
            "nhead": 2,
            "dim_feedforward": 16,
            "dropout": 0.0,
            "activation": "gelu",
            "norm_first": True,
        },
        [2, 5, 8],
        lambda: nn.TransformerEncoderLayer(8, 2, 16, 0.0, "gelu", batch_first=True, norm_first=True),
        {"d_model": 8},
    ),
    "TransformerDecoderLayer": Sample(
        {
            "type": "TransformerDecoderLayer",
            "nhead": 2,
            "dim_feedforward": 16,
            "dropout": 0.0,
            "activation": "gelu",
            "norm_first": True,
        },
        [2, 5, 8],
        lambda: nn.TransformerDecoderLayer(8, 2, 16, 0.0, "gelu", batch_first=True, norm_first=True),
        {"d_model": 8},
        tensors={"memory": [2, 3, 8]},
    ),
    "MyLinear": Sample(
        {"type": "MyLinear", "out_features": 5}, [3, 10], lambda: MyLinear(10, 5), {"in_features": 10}
    ),
    "MyConv2d": Sample(
        {"type": "MyConv2d", "out_channels": 6, "kernel_size": 3},
        [2, 3, 8, 8],
        lambda: MyConv2d(3, 6, 3),
        {"in_channels": 3},
    ),
    "ConvBlock": Sample(
        {"type": "ConvBlock", "out_channels": 8, "activation": "silu"},
        [2, 3, 8, 8],
        lambda: ConvBlock(3, 8, act=nn.SiLU),
        {"in_channels": 3},
    ),
    "Sequential": Sample(
        {"type": "Sequential", "layers": [{"type": "Linear", "out_features": 4}, {"type": "ReLU"}]},
        [2, 3],
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU()),
        {"layers": [{"type": "Linear", "in_features": 3, "out_features": 4}, {"type": "ReLU"}]},
    ),
    "Residual": Sample(
        {
            "type": "Residual",
            "layers": [
                {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
                {"type": "BatchNorm2d"},
            ],
            "shortcut": [{"type": "Conv2d", "out_channels": 4, "kernel_size": 1}],
        },
        [2, 3, 6, 6],
        lambda: Residual(
            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)), nn.Sequential(nn.Conv2d(3, 4, 1))
        ),
        {"layers": [{"in_channels": 3}, {"num_features": 4}], "shortcut": [{"in_channels": 3}]},
    ),
    "Concat": Sample(
        {
            "type": "Concat",
            "branches": [
                [{"type": "Conv2d", "out_channels": 2, "kernel_size": 1}],
                [{"type": "Conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}, {"type": "ReLU"}],
            ],
        },
        [2, 3, 5, 5],
        lambda: Concat(
            [nn.Sequential(nn.Conv2d(3, 2, 1)), nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())],
            dim=1,
        ),
        {"branches": [[{"in_channels": 3}], [{"in_channels": 3}, {}]]},
    ),
    # -- issue 9: structure --
    "Multiply": Sample(  # squeeze-excitation: x * sigmoid(conv(relu(conv(pool(x)))))
        {
            "type": "Multiply",
            "branches": [
                [],
                [
                    {"type": "AdaptiveAvgPool2d", "output_size": 1},
                    {"type": "Conv2d", "out_channels": 2, "kernel_size": 1},
                    {"type": "ReLU"},
                    {"type": "Conv2d", "out_channels": 4, "kernel_size": 1},
                    {"type": "Sigmoid"},
                ],
            ],
        },
        [2, 4, 5, 5],
        lambda: Multiply(
            [
                nn.Sequential(),
                nn.Sequential(
                    nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 1), nn.Sigmoid()
                ),
            ]
        ),
        {"branches": [[], [{}, {"in_channels": 4}, {}, {"in_channels": 2}, {}]]},
    ),
    "Repeat": Sample(
        {
            "type": "Repeat",
            "times": 3,
            "layers": [
                {"type": "Residual", "layers": [{"type": "LayerNorm"}, {"type": "Linear", "out_features": 6}]}
            ],
        },
        [2, 4, 6],
        lambda: nn.Sequential(
            *[nn.Sequential(Residual(nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 6)))) for _ in range(3)]
        ),
        {"times": 3, "layers": [{"layers": [{"normalized_shape": [6]}, {"in_features": 6}]}]},
    ),
    # -- issue 9: plumbing and positions --
    "Permute": Sample(
        {"type": "Permute", "dims": [0, 2, -1, 1]}, [2, 3, 4, 5], lambda: Permute((0, 2, -1, 1))
    ),
    "Transpose": Sample({"type": "Transpose", "dim0": 1, "dim1": 2}, [2, 3, 4], lambda: Transpose(1, 2)),
    "Select": Sample({"type": "Select", "dim": 1, "index": -1}, [2, 3, 4], lambda: Select(1, -1)),
    "Slice": Sample(
        {"type": "Slice", "dim": -1, "start": 1, "end": -1, "step": 2}, [2, 3, 8], lambda: Slice(-1, 1, -1, 2)
    ),
    "Mean": Sample(
        {"type": "Mean", "dim": [1, 2], "keepdim": True}, [2, 3, 4, 5], lambda: Mean((1, 2), True)
    ),
    "ClassToken": Sample({"type": "ClassToken"}, [2, 5, 8], lambda: ClassToken(8), {"embed_dim": 8}),
    "PositionalEmbedding": Sample(
        {"type": "PositionalEmbedding", "num_positions": 7},
        [2, 5, 8],
        lambda: PositionalEmbedding(7, 8),
        {"embedding_dim": 8},
    ),
    "SinusoidalPositionalEncoding": Sample(
        {"type": "SinusoidalPositionalEncoding", "max_len": 9},
        [2, 5, 7],
        lambda: SinusoidalPositionalEncoding(9, 7),
        {"embedding_dim": 7},
    ),
    "CausalSelfAttention": Sample(
        {"type": "CausalSelfAttention", "num_heads": 4, "num_kv_heads": 2},
        [2, 5, 16],
        lambda: CausalSelfAttention(16, 4, 2),
        {"embed_dim": 16, "rope": True, "qkv_bias": False, "out_bias": False},
    ),
    "SwiGLU": Sample(
        {"type": "SwiGLU", "hidden_features": 12}, [2, 5, 8], lambda: SwiGLU(8, 12), {"in_features": 8}
    ),
    "RMSNorm": Sample(
        {"type": "RMSNorm", "eps": 1e-6},
        [2, 3, 8],
        lambda: nn.RMSNorm([8], eps=1e-6),
        {"normalized_shape": [8]},
    ),
    "InstanceNorm1d": Sample(
        {"type": "InstanceNorm1d", "affine": True},
        [2, 4, 6],
        lambda: nn.InstanceNorm1d(4, affine=True),
        {"num_features": 4},
    ),
    "InstanceNorm2d": Sample(
        {"type": "InstanceNorm2d", "track_running_stats": True},
        [2, 3, 4, 4],
        lambda: nn.InstanceNorm2d(3, track_running_stats=True),
        {"num_features": 3},
    ),
    "ReLU6": Sample({"type": "ReLU6"}, [2, 5], nn.ReLU6),
    "Hardswish": Sample({"type": "Hardswish"}, [2, 5], nn.Hardswish),
    "Hardsigmoid": Sample({"type": "Hardsigmoid"}, [2, 5], nn.Hardsigmoid),
    "Mish": Sample({"type": "Mish"}, [2, 5], nn.Mish),
    "Softplus": Sample(
        {"type": "Softplus", "beta": 2.0, "threshold": 5.0}, [2, 5], lambda: nn.Softplus(2.0, 5.0)
    ),
    "PReLU": Sample({"type": "PReLU", "num_parameters": 3, "init": 0.1}, [2, 3, 4], lambda: nn.PReLU(3, 0.1)),
    "Conv3d": Sample(
        {"type": "Conv3d", "out_channels": 4, "kernel_size": [1, 3, 3], "stride": [1, 2, 2]},
        [1, 2, 3, 6, 6],
        lambda: nn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2)),
        {"in_channels": 2},
    ),
    "ConvTranspose1d": Sample(
        {"type": "ConvTranspose1d", "out_channels": 3, "kernel_size": 4, "stride": 2, "output_padding": 1},
        [2, 5, 7],
        lambda: nn.ConvTranspose1d(5, 3, 4, stride=2, output_padding=1),
        {"in_channels": 5},
    ),
    "Upsample": Sample(
        {"type": "Upsample", "scale_factor": 2, "mode": "bilinear", "align_corners": False},
        [2, 3, 4, 5],
        lambda: nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
    ),
    "ZeroPad2d": Sample(
        {"type": "ZeroPad2d", "padding": [1, 2, 0, 3]}, [2, 3, 4, 5], lambda: nn.ZeroPad2d((1, 2, 0, 3))
    ),
    "PixelShuffle": Sample(
        {"type": "PixelShuffle", "upscale_factor": 2}, [2, 8, 3, 3], lambda: nn.PixelShuffle(2)
    ),
    # -- issue 18: smaller gaps --
    "StochasticDepth": Sample(
        {"type": "StochasticDepth", "p": 0.2}, [4, 3, 5], lambda: StochasticDepth(0.2, "row")
    ),
    "LayerScale": Sample(
        {"type": "LayerScale", "init": 0.1}, [2, 3, 6], lambda: LayerScale(6, 0.1), {"dim": 6}
    ),
}

# FlopCounterMode has no formula for some fused CPU kernels: aten.lstm (one op, counted 0) and
# the CPU flash-attention kernel that attention without dropout runs. The spec's count is checked
# against the hand-written module run on meta for every type, and also against a real CPU run
# for every type but these (on CPU they undercount; meta runs the decomposed ops).
CPU_FLOPS_UNCOUNTED = {"LSTM", "MultiheadAttention", "TransformerEncoderLayer", "CausalSelfAttention"}


def real_input(shape: list[int], dtype: str) -> torch.Tensor:
    if dtype.startswith("int"):
        return torch.randint(0, 20, shape, dtype=DTYPES[dtype])
    return torch.randn(shape, dtype=DTYPES[dtype])


def assert_subset(expected: Any, actual: Any, where: str = "spec") -> None:
    """Every key of ``expected`` is in ``actual`` with an equal value (recursively)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing from {actual!r}"
            assert_subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict | list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


# More samples of one type, for fields its main sample leaves at their defaults: "<type>/<what>".
VARIANTS: dict[str, Sample] = {
    "MultiheadAttention/causal": Sample(
        {"type": "MultiheadAttention", "num_heads": 2, "causal": True},
        [2, 5, 8],
        lambda: SelfAttention(8, 2, batch_first=True, causal=True),
        {"embed_dim": 8},
    ),
    "TransformerEncoderLayer/causal_gelu_tanh": Sample(
        {
            "type": "TransformerEncoderLayer",
            "nhead": 2,
            "dim_feedforward": 16,
            "activation": "gelu_tanh",
            "causal": True,
        },
        [2, 5, 8],
        lambda: TransformerEncoderLayer(
            8, 2, 16, activation=nn.GELU(approximate="tanh"), batch_first=True, causal=True
        ),
        {"d_model": 8},
    ),
    "CausalSelfAttention/no_rope_bias_mha": Sample(
        {"type": "CausalSelfAttention", "embed_dim": 12, "num_heads": 3, "rope": False, "bias": True},
        [1, 4, 12],
        lambda: CausalSelfAttention(12, 3, rope=False, bias=True),
        {"num_kv_heads": 3, "qkv_bias": True, "out_bias": True},
    ),
    "CausalSelfAttention/rope_theta_mqa": Sample(
        {"type": "CausalSelfAttention", "num_heads": 4, "num_kv_heads": 1, "rope_theta": 500000.0},
        [2, 6, 16],
        lambda: CausalSelfAttention(16, 4, 1, rope_theta=500000.0),
        {"embed_dim": 16},
    ),
    "CausalSelfAttention/qwen2_biases": Sample(  # q, k, v biased, o not
        {"type": "CausalSelfAttention", "num_heads": 4, "num_kv_heads": 2, "qkv_bias": True},
        [2, 5, 16],
        lambda: CausalSelfAttention(16, 4, 2, qkv_bias=(True, True, True), out_bias=False),
        {"embed_dim": 16, "qkv_bias": True, "out_bias": False},
    ),
    "CausalSelfAttention/whisper_biases": Sample(  # every projection but k biased
        {
            "type": "CausalSelfAttention",
            "num_heads": 2,
            "rope": False,
            "bias": True,
            "qkv_bias": [True, False, True],
        },
        [2, 5, 8],
        lambda: CausalSelfAttention(8, 2, rope=False, qkv_bias=(True, False, True), out_bias=True),
        {"embed_dim": 8, "qkv_bias": [True, False, True], "out_bias": True},
    ),
    "CausalSelfAttention/out_bias_only": Sample(
        {"type": "CausalSelfAttention", "num_heads": 2, "out_bias": True},
        [1, 4, 8],
        lambda: CausalSelfAttention(8, 2, out_bias=True),
        {"embed_dim": 8, "qkv_bias": False, "out_bias": True},
    ),
    "MultiheadAttention/add_bias_kv": Sample(
        {"type": "MultiheadAttention", "num_heads": 2, "add_bias_kv": True, "bias": False},
        [2, 5, 8],
        lambda: SelfAttention(8, 2, bias=False, add_bias_kv=True, batch_first=True),
        {"embed_dim": 8},
    ),
    # -- issue 18: graph nodes' tensor arguments (masks: True hides the last position) --
    "MultiheadAttention/cross_kdim_vdim_padding": Sample(
        {"type": "MultiheadAttention", "num_heads": 2, "kdim": 6, "vdim": 4},
        [2, 5, 8],
        lambda: SelfAttention(8, 2, batch_first=True, kdim=6, vdim=4),
        {"embed_dim": 8, "kdim": 6, "vdim": 4},
        tensors={"key": [2, 3, 6], "value": [2, 3, 4], "key_padding_mask": [2, 3]},
    ),
    "MultiheadAttention/causal_masks": Sample(
        {"type": "MultiheadAttention", "num_heads": 2, "causal": True},
        [2, 5, 8],
        lambda: SelfAttention(8, 2, batch_first=True, causal=True),
        {"embed_dim": 8, "kdim": 8, "vdim": 8},
        tensors={"key_padding_mask": [2, 5], "attn_mask": [5, 5]},
    ),
    "TransformerEncoderLayer/causal_masks": Sample(
        {
            "type": "TransformerEncoderLayer",
            "nhead": 2,
            "dim_feedforward": 16,
            "dropout": 0.0,
            "causal": True,
        },
        [2, 5, 8],
        lambda: TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True, causal=True),
        {"d_model": 8},
        tensors={"src_mask": [5, 5], "src_key_padding_mask": [2, 5]},
    ),
    "TransformerEncoderLayer/padding": Sample(
        {"type": "TransformerEncoderLayer", "nhead": 2, "dim_feedforward": 16, "dropout": 0.0},
        [2, 5, 8],
        lambda: TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True),
        {"d_model": 8},
        tensors={"src_key_padding_mask": [2, 5]},
    ),
    "TransformerDecoderLayer/causal_masks": Sample(
        {
            "type": "TransformerDecoderLayer",
            "nhead": 2,
            "dim_feedforward": 16,
            "dropout": 0.0,
            "causal": True,
        },
        [2, 5, 8],
        lambda: TransformerDecoderLayer(8, 2, 16, 0.0, batch_first=True, causal=True),
        {"d_model": 8},
        tensors={
            "memory": [2, 3, 8],
            "tgt_mask": [5, 5],
            "memory_mask": [5, 3],
            "tgt_key_padding_mask": [2, 5],
            "memory_key_padding_mask": [2, 3],
        },
    ),
    "LSTM/state_h0_c0": Sample(
        {"type": "LSTM", "hidden_size": 6, "num_layers": 2, "output": "sequence_and_state"},
        [2, 5, 4],
        lambda: with_state(LSTM(4, 6, num_layers=2, batch_first=True)),
        {"input_size": 4},
        tensors={"h0": [2, 2, 6], "c0": [2, 2, 6]},
    ),
    "GRU/state_h0": Sample(
        {"type": "GRU", "hidden_size": 5, "bidirectional": True, "output": "sequence_and_state"},
        [2, 5, 4],
        lambda: with_state(GRU(4, 5, bidirectional=True, batch_first=True)),
        {"input_size": 4},
        tensors={"h0": [2, 2, 5]},
    ),
    "RNN/state": Sample(
        {"type": "RNN", "hidden_size": 5, "output": "sequence_and_state"},
        [2, 5, 4],
        lambda: with_state(RNN(4, 5, batch_first=True)),
        {"input_size": 4},
        tensors={},
    ),
    "MaxPool2d/ceil_mode": Sample(  # GoogLeNet's and SqueezeNet's pools
        {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "ceil_mode": True},
        [2, 3, 10, 9],
        lambda: nn.MaxPool2d(3, 2, ceil_mode=True),
    ),
    "MaxPool1d/ceil_mode": Sample(
        {"type": "MaxPool1d", "kernel_size": 2, "padding": 1, "ceil_mode": True},
        [2, 3, 8],
        lambda: nn.MaxPool1d(2, padding=1, ceil_mode=True),
    ),
    "AvgPool1d/ceil_mode": Sample(
        {"type": "AvgPool1d", "kernel_size": 3, "stride": 2, "ceil_mode": True},
        [2, 3, 8],
        lambda: nn.AvgPool1d(3, 2, ceil_mode=True),
    ),
    "AvgPool2d/ceil_mode": Sample(
        {"type": "AvgPool2d", "kernel_size": [3, 2], "stride": 2, "padding": 1, "ceil_mode": True},
        [2, 3, 7, 6],
        lambda: nn.AvgPool2d((3, 2), 2, 1, ceil_mode=True),
    ),
    "StochasticDepth/batch_p1": Sample(
        {"type": "StochasticDepth", "p": 1.0, "mode": "batch"},
        [2, 3, 4, 4],
        lambda: StochasticDepth(1.0, "batch"),
    ),
    "Upsample/size_nearest_3d": Sample(
        {"type": "Upsample", "size": [4, 6, 5]},
        [1, 2, 2, 3, 4],
        lambda: nn.Upsample(size=(4, 6, 5), mode="nearest"),
    ),
    "Upsample/bicubic": Sample(
        {"type": "Upsample", "size": 7, "mode": "bicubic", "align_corners": True},
        [1, 2, 4, 5],
        lambda: nn.Upsample(size=7, mode="bicubic", align_corners=True),
    ),
    "Upsample/linear_per_dim": Sample(
        {"type": "Upsample", "scale_factor": [1.5], "mode": "linear"},
        [2, 3, 5],
        lambda: nn.Upsample(scale_factor=(1.5,), mode="linear"),
    ),
}


@pytest.fixture(params=[*sorted(LAYER_SPECS), *VARIANTS], ids=str)
def layer_type(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_sample_is_a_registered_type() -> None:
    assert set(SAMPLES) <= set(LAYER_SPECS), (
        f"samples for unregistered types: {set(SAMPLES) - set(LAYER_SPECS)}"
    )


def test_registry_holds_the_issue_minimum() -> None:
    required = (
        "MyLinear",
        "MyConv2d",
        "ConvBlock",
        "Linear",
        "Bilinear",
        "Conv1d",
        "Conv2d",
        "ConvTranspose2d",
        "MaxPool1d",
        "MaxPool2d",
        "AvgPool1d",
        "AvgPool2d",
        "AdaptiveAvgPool1d",
        "AdaptiveAvgPool2d",
        "AdaptiveMaxPool2d",
        "Dropout",
        "Dropout2d",
        "BatchNorm1d",
        "BatchNorm2d",
        "LayerNorm",
        "GroupNorm",
        "Flatten",
        "Unflatten",
        "Identity",
        "Embedding",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "GELU",
        "SiLU",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "RNN",
        "LSTM",
        "GRU",
        "MultiheadAttention",
        "TransformerEncoderLayer",
        "Sequential",
        "Residual",
        "Concat",
    )
    assert set(required) <= set(LAYER_SPECS), set(required) - set(LAYER_SPECS)


def test_registry_keys_are_the_type_literals() -> None:
    for name, spec_class in LAYER_SPECS.items():
        assert spec_class.model_fields["type"].default == name
        assert spec_class.model_config.get("extra") == "forbid", name


def test_layer_matches_torch(layer_type: str, client) -> None:
    sample = SAMPLES.get(layer_type) or VARIANTS.get(layer_type)
    assert sample is not None, f"registered layer type {layer_type!r} has no sample in tests/test_registry.py"
    assert sample.spec["type"] == layer_type.split("/")[0]
    body = {
        "model": {"layers": [sample.spec]},
        "input_shape": sample.input_shape,
        "input_dtype": sample.input_dtype,
    }
    response = client.post("/v1/models/summary", json=body)
    if sample.tensors is not None and response.status_code != 200:
        # A graph node (compared with torch on its own below): refused in a sequence at the layer.
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "model", "layers", 0], error
        required = LAYER_SPECS[sample.spec["type"]].required_tensor_args
        assert all(f"needs `{name}`" in error["msg"] for name in required), error["msg"]
        return
    assert response.status_code == 200, response.text
    summary = response.json()

    torch.manual_seed(0)
    reference = nn.Sequential(sample.reference())
    x = real_input(sample.input_shape, sample.input_dtype)

    # print(model), exactly
    assert summary["model_repr"] == str(reference)

    # parameter names (full module paths), shapes and counts
    ours = {
        f"{layer['path']}.{p['name']}": (p["shape"], p["numel"], p["trainable"])
        for layer in summary["layers"]
        for p in layer["params"]
    }
    theirs = {name: (list(p.shape), p.numel(), p.requires_grad) for name, p in reference.named_parameters()}
    assert ours == theirs
    total, trainable = count_params(reference)
    assert (summary["total_params"], summary["trainable_params"]) == (total, trainable)
    assert summary["layers"][0]["num_params"] == total
    assert summary["param_bytes"] == sum(p.numel() * p.element_size() for p in reference.parameters())
    assert summary["buffer_bytes"] == sum(b.numel() * b.element_size() for b in reference.buffers())

    # output shapes of a real forward pass, the model's and every node's
    shapes, out_shape = output_shapes(reference, x)
    assert summary["output_shape"] == out_shape
    assert summary["input_shape"] == sample.input_shape
    for layer in summary["layers"]:
        assert layer["output_shape"] == shapes[layer["path"]], layer["path"]

    # inferred sizes, in the layer entry and in the returned model spec
    assert_subset({**sample.spec, **sample.inferred}, summary["layers"][0]["spec"])
    assert summary["model"]["layers"][0] == summary["layers"][0]["spec"]

    # FLOPs: the hand-written module under FlopCounterMode, on meta, and on CPU where countable
    with torch.device("meta"):
        meta_reference = nn.Sequential(sample.reference())
    meta_flops = flop_count(meta_reference, torch.empty(sample.input_shape, dtype=x.dtype, device="meta"))
    assert summary["flops"] == meta_flops
    assert summary["mult_adds"] == summary["flops"] // 2
    if sample.spec["type"] not in CPU_FLOPS_UNCOUNTED:
        assert summary["flops"] == flop_count(reference, x)


def built_pair(sample: Sample) -> tuple[nn.Module, nn.Module]:
    """The real model built from the inferred spec, and the hand-written one, holding the same
    weights (loaded strictly: same names and shapes), both in eval mode. A layer needing tensor
    arguments is built on its own (a sequence cannot hold it), the others as a one-layer model."""
    if sample.tensors is not None:
        spec = LAYER_SPECS[sample.spec["type"]].model_validate(sample.spec)
        torch.manual_seed(0)
        ours, reference = spec.infer(tuple(sample.input_shape)).build(), sample.reference()
    else:
        traced = trace_model(ModelSpec(layers=[sample.spec]), tuple(sample.input_shape), sample.input_dtype)
        torch.manual_seed(0)
        ours, reference = traced.spec.build(), nn.Sequential(sample.reference())
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours.eval(), reference.eval()


def tensor_args(sample: Sample) -> dict[str, torch.Tensor]:
    """Random tensors of the sample's shapes. Masks are boolean and hide different positions, so
    that each one given matters: a key padding mask the last key, an attention mask the first key
    from every query but the first (which, causal, sees only that key)."""
    tensors = {}
    for name, shape in (sample.tensors or {}).items():
        if name.endswith("key_padding_mask"):
            tensors[name] = torch.zeros(shape, dtype=torch.bool)
            tensors[name][..., -1] = True
        elif name.endswith("mask"):
            tensors[name] = torch.zeros(shape, dtype=torch.bool)
            tensors[name][..., 1:, 0] = True
        else:
            tensors[name] = torch.randn(shape)
    return tensors


def test_built_model_computes_what_torch_computes(layer_type: str) -> None:
    """The real model built from the inferred spec takes the hand-written module's weights
    (same names and shapes, strictly) and returns the same output on the same input."""
    sample = SAMPLES.get(layer_type) or VARIANTS.get(layer_type)
    assert sample is not None, f"registered layer type {layer_type!r} has no sample in tests/test_registry.py"
    ours, reference = built_pair(sample)
    x, tensors = real_input(sample.input_shape, sample.input_dtype), tensor_args(sample)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, **tensors), reference(x, **tensors))
    assert str(ours) == str(reference)


def test_built_model_trains_as_torch_does(layer_type: str) -> None:
    """Backward through the built model gives the hand-written module's gradients, for every
    parameter and for a floating input (eval mode, so dropout draws nothing)."""
    sample = SAMPLES.get(layer_type) or VARIANTS.get(layer_type)
    assert sample is not None, f"registered layer type {layer_type!r} has no sample in tests/test_registry.py"
    ours, reference = built_pair(sample)
    x, tensors = real_input(sample.input_shape, sample.input_dtype), tensor_args(sample)
    inputs = []
    for model in (ours, reference):
        given = x.clone().requires_grad_(x.is_floating_point())
        out = model(given, **tensors)
        outs = out if isinstance(out, tuple) else (out,)  # a recurrent layer's state too
        if outs[0].requires_grad:
            sum(o.square().mean() for o in outs).backward()
        inputs.append(given.grad)
    if inputs[1] is not None:
        torch.testing.assert_close(inputs[0], inputs[1])
    for (name, ours_p), (_, theirs_p) in zip(
        ours.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert ours_p.grad is not None and theirs_p.grad is not None, name
        torch.testing.assert_close(ours_p.grad, theirs_p.grad, msg=name)


# What a float field can hold: 1e300 fits no float32, 1e5 no float16, -3.4e38 no bfloat16 (the
# parameters follow a floating input's dtype). Each float field of each sample either is refused
# at its loc, or the real module built with it (what exported code and a job build) holds only
# finite parameters and buffers.
UNHOLDABLE = [(1e300, "float32"), (-1e300, "float32"), (1e5, "float16"), (-3.4e38, "bfloat16")]


@pytest.mark.parametrize(("value", "dtype"), UNHOLDABLE, ids=[f"{v:g}-{d}" for v, d in UNHOLDABLE])
def test_a_float_torch_cannot_hold_is_refused_at_its_field(
    layer_type: str, value: float, dtype: str, client
) -> None:
    sample = SAMPLES.get(layer_type) or VARIANTS.get(layer_type)
    assert sample is not None, f"registered layer type {layer_type!r} has no sample in tests/test_registry.py"
    cls = LAYER_SPECS[sample.spec["type"]]
    floats = [name for name, f in cls.model_fields.items() if accepts(f.annotation, float)]
    input_dtype = dtype if sample.input_dtype.startswith("float") else sample.input_dtype
    shape = sample.input_shape
    body = {"model": {"layers": [sample.spec]}, "input_shape": shape, "input_dtype": input_dtype}
    if not floats or client.post("/v1/models/summary", json=body).status_code != 200:
        return  # no float field, or this layer does not take the dtype anyway
    for name in floats:
        spec = {**sample.spec, name: value}
        response = client.post("/v1/models/summary", json={**body, "model": {"layers": [spec]}})
        if response.status_code == 422:
            for error in response.json()["detail"]:
                assert error["loc"][:4] == ["body", "model", "layers", 0] and name in error["loc"], error
            continue
        assert response.status_code == 200, response.text
        traced = trace_model(ModelSpec(layers=[spec]), tuple(shape), input_dtype)
        module = traced.spec.build().to(traced.param_dtype)
        for tensor_name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point():
                assert bool(tensor.isfinite().all()), f"{name}={value:g} makes {tensor_name} non-finite"
