"""Property tests: random layer stacks, summarised by the API and built directly in PyTorch.

Hypothesis draws a random input shape and a random stack of layers whose sizes fit together
(convs, pools, norms, activations, recurrent and attention layers, containers), leaving sizes
the service infers out of the spec half of the time. The same stack is written by hand with
``torch.nn`` modules (``tests/torch_modules.py`` for the wrappers), run on a real tensor, and the
summary must agree with it: output shape, every layer's output shape, parameter counts, and
``print(model)``. Random invalid stacks (a valid prefix, then one layer that cannot take its
input, as real PyTorch confirms) must get a 422 whose ``loc`` points at exactly that layer.

Examples are bounded and derandomised so CI sees the same cases every run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch_modules import (
    GRU,
    LSTM,
    RNN,
    CausalSelfAttention,
    ClassToken,
    Concat,
    ConvBlock,
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
    SwiGLU,
    TransformerEncoderLayer,
    Transpose,
    count_params,
    last_step,
    output_shapes,
)

URL = "/v1/models/summary"
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_DEPTH = 2  # containers inside containers inside the model

Layer = tuple[dict, nn.Module]  # a layer's JSON spec and the same layer in plain torch


@dataclass
class Stack:
    specs: list[dict]
    modules: list[nn.Module]
    x: torch.Tensor  # the real input tensor
    input_dtype: str

    def model(self) -> nn.Sequential:
        return nn.Sequential(*self.modules)

    def request(self) -> dict:
        shape = list(self.x.shape)
        return {"model": {"layers": self.specs}, "input_shape": shape, "input_dtype": self.input_dtype}


def maybe(draw: st.DrawFn, spec: dict, **inferred: int | list[int]) -> dict:
    """``spec`` with the sizes the service can infer set explicitly, or left out (drawn)."""
    return spec | inferred if draw(st.booleans()) else spec


# -- one layer that fits the input shape, drawn per rank -----------------------------------------

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "Tanh": nn.Tanh,
    "SiLU": nn.SiLU,
    "Sigmoid": nn.Sigmoid,
    "Identity": nn.Identity,
    "ReLU6": nn.ReLU6,
    "Hardswish": nn.Hardswish,
    "Hardsigmoid": nn.Hardsigmoid,
    "Mish": nn.Mish,
}
BLOCK_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
POOLS_2D = {
    "MaxPool2d": nn.MaxPool2d,
    "AvgPool2d": nn.AvgPool2d,
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
    "AdaptiveMaxPool2d": nn.AdaptiveMaxPool2d,
}
POOLS_1D = {"MaxPool1d": nn.MaxPool1d, "AvgPool1d": nn.AvgPool1d}


def elementwise(draw: st.DrawFn, shape: torch.Size) -> Layer:
    choice = draw(
        st.sampled_from(["act", "LeakyReLU", "ELU", "Dropout", "Softmax", "LogSoftmax", "Softplus", "PReLU"])
    )
    if choice == "act":
        name = draw(st.sampled_from(sorted(ACTIVATIONS)))
        return {"type": name}, ACTIVATIONS[name]()
    if choice == "LeakyReLU":
        slope = draw(st.sampled_from([0.01, 0.2]))
        return {"type": "LeakyReLU", "negative_slope": slope}, nn.LeakyReLU(slope)
    if choice == "ELU":
        return {"type": "ELU", "alpha": 0.5}, nn.ELU(0.5)
    if choice == "Softplus":
        beta = draw(st.sampled_from([0.5, 1.0, 2.0]))
        return {"type": "Softplus", "beta": beta}, nn.Softplus(beta)
    if choice == "PReLU":  # one shared slope, or one per channel (dimension 1)
        count = shape[1] if len(shape) >= 2 and draw(st.booleans()) else 1
        return {"type": "PReLU", "num_parameters": count}, nn.PReLU(count)
    if choice == "Dropout":
        p = draw(st.sampled_from([0.0, 0.1, 0.5]))
        return {"type": "Dropout", "p": p}, nn.Dropout(p)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    module = nn.Softmax(dim=dim) if choice == "Softmax" else nn.LogSoftmax(dim=dim)
    return {"type": choice, "dim": dim}, module


def linear(draw: st.DrawFn, shape: torch.Size, out: int | None = None) -> Layer:
    features = shape[-1]
    out = out or draw(st.integers(1, 12))
    bias = draw(st.booleans())
    if draw(st.booleans()):
        spec = maybe(draw, {"type": "MyLinear", "out_features": out, "bias": bias}, in_features=features)
        return spec, MyLinear(features, out, bias=bias)
    spec = maybe(draw, {"type": "Linear", "out_features": out, "bias": bias}, in_features=features)
    return spec, nn.Linear(features, out, bias=bias)


def layer_norm(draw: st.DrawFn, shape: torch.Size) -> Layer:
    if len(shape) >= 3 and draw(st.booleans()):
        trailing = list(shape[-2:])
        return {"type": "LayerNorm", "normalized_shape": trailing}, nn.LayerNorm(trailing)
    return maybe(draw, {"type": "LayerNorm"}, normalized_shape=[shape[-1]]), nn.LayerNorm(shape[-1])


def conv2d(draw: st.DrawFn, shape: torch.Size, out: int | None = None, same: bool = False) -> Layer:
    _, channels, height, width = shape
    if same:  # keeps [C, H, W]: the body of a residual block
        spec = {"type": "Conv2d", "out_channels": out, "kernel_size": 3, "padding": 1}
        return maybe(draw, spec, in_channels=channels), nn.Conv2d(channels, out, 3, padding=1)
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
    out = out or groups * draw(st.integers(1, 4))
    padding = draw(st.integers(0, 2))
    dilation = draw(st.integers(1, 2))
    span = min(height, width) + 2 * padding  # the dilated kernel must fit the padded input
    kernel = draw(st.integers(1, min(5, (span - 1) // dilation + 1)))
    kernel_arg = [kernel, kernel] if draw(st.booleans()) else kernel
    stride = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    args = {"kernel_size": kernel, "stride": stride, "padding": padding, "dilation": dilation}
    if groups == 1 and dilation == 1 and draw(st.booleans()):
        del args["dilation"]
        spec = {"type": "MyConv2d", "out_channels": out, **args, "bias": bias}
        return maybe(draw, spec, in_channels=channels), MyConv2d(channels, out, bias=bias, **args)
    spec = {"type": "Conv2d", "out_channels": out, **args, "kernel_size": kernel_arg, "groups": groups}
    module = nn.Conv2d(channels, out, **args, groups=groups, bias=bias)
    return maybe(draw, spec | {"bias": bias}, in_channels=channels), module


def image_layer(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    _, channels, height, width = shape
    smallest = min(height, width)
    choice = draw(
        st.sampled_from(
            [
                "conv",
                "conv",
                "block",
                "bn",
                "gn",
                "pool",
                "adaptive",
                "flatten",
                "elementwise",
                "drop2d",
                "resample",
                "instancenorm",
            ]
            + (["residual", "concat", "sequential", "repeat", "multiply"] if depth < MAX_DEPTH else [])
        )
    )
    # In training mode each group needs more than one value, as each batch-norm channel does.
    fitting = [g for g in range(1, channels + 1) if channels % g == 0 and batch_norm_fits(shape, g)]
    if (choice == "bn" and not batch_norm_fits(shape)) or (choice == "gn" and not fitting):
        choice = "elementwise"
    if choice == "conv":
        return conv2d(draw, shape)
    if choice == "block":
        out = draw(st.integers(1, 6))
        act = draw(st.sampled_from(sorted(BLOCK_ACTIVATIONS)))
        padding = 1 if smallest < 3 else draw(st.integers(0, 1))
        conv_out = (shape[0], out, height + 2 * padding - 2, width + 2 * padding - 2)
        bn = batch_norm_fits(conv_out) and draw(st.booleans())
        spec = {
            "type": "ConvBlock",
            "out_channels": out,
            "padding": padding,
            "batch_norm": bn,
            "activation": act,
        }
        module = ConvBlock(channels, out, 3, 1, padding, bn=bn, act=BLOCK_ACTIVATIONS[act])
        return maybe(draw, spec, in_channels=channels), module
    if choice == "bn":
        return maybe(draw, {"type": "BatchNorm2d"}, num_features=channels), nn.BatchNorm2d(channels)
    if choice == "gn":
        groups = draw(st.sampled_from(fitting))
        spec = maybe(draw, {"type": "GroupNorm", "num_groups": groups}, num_channels=channels)
        return spec, nn.GroupNorm(groups, channels)
    if choice == "pool":
        kernel = draw(st.integers(1, min(4, smallest)))
        stride = draw(st.none() | st.integers(1, kernel))
        padding = draw(st.integers(0, kernel // 2))
        kind = draw(st.sampled_from(["MaxPool2d", "AvgPool2d"]))
        spec = {"type": kind, "kernel_size": kernel, "stride": stride, "padding": padding}
        return spec, POOLS_2D[kind](kernel, stride, padding)
    if choice == "adaptive":
        size = draw(st.integers(1, 4))
        kind = draw(st.sampled_from(["AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]))
        return {"type": kind, "output_size": size}, POOLS_2D[kind](size)
    if choice == "flatten":
        start = draw(st.integers(1, 3))
        return {"type": "Flatten", "start_dim": start}, nn.Flatten(start)
    if choice == "drop2d":
        return {"type": "Dropout2d", "p": 0.25}, nn.Dropout2d(0.25)
    if choice == "resample":
        return resample(draw, shape)
    if choice == "instancenorm":
        if height * width == 1:
            return elementwise(draw, shape)
        affine = draw(st.booleans())
        spec = maybe(draw, {"type": "InstanceNorm2d", "affine": affine}, num_features=channels)
        return spec, nn.InstanceNorm2d(channels, affine=affine)
    if choice == "elementwise":
        return elementwise(draw, shape)
    if choice == "residual":
        return residual(draw, shape, depth)
    if choice == "concat":
        branches = [
            conv2d(draw, shape, out=draw(st.integers(1, 3)), same=True)
            for _ in range(draw(st.integers(1, 3)))
        ]
        spec = {"type": "Concat", "branches": [[s] for s, _ in branches], "dim": 1}
        return spec, Concat([nn.Sequential(m) for _, m in branches], dim=1)
    if choice in ("repeat", "multiply"):
        return repeat(draw, shape) if choice == "repeat" else multiply(draw, shape)
    return sequential(draw, shape, depth)


def resample(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """Upsample (every mode a 4-D input takes), ZeroPad2d or PixelShuffle."""
    channels = shape[1]
    kind = draw(st.sampled_from(["Upsample", "ZeroPad2d", "PixelShuffle"]))
    if kind == "Upsample":
        mode = draw(st.sampled_from(["nearest", "bilinear", "bicubic"]))
        align = None if mode == "nearest" else draw(st.sampled_from([None, True, False]))
        if draw(st.booleans()):
            size = draw(st.integers(1, 12))
            spec = {"type": kind, "size": size, "mode": mode, "align_corners": align}
            return spec, nn.Upsample(size=size, mode=mode, align_corners=align)
        scale = draw(st.sampled_from([1.0, 1.5, 2.0]))
        spec = {"type": kind, "scale_factor": scale, "mode": mode, "align_corners": align}
        return spec, nn.Upsample(scale_factor=scale, mode=mode, align_corners=align)
    if kind == "ZeroPad2d":
        padding = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
        return {"type": kind, "padding": padding}, nn.ZeroPad2d(tuple(padding))
    factor = draw(st.sampled_from([r for r in (1, 2) if channels % (r * r) == 0]))
    return {"type": kind, "upscale_factor": factor}, nn.PixelShuffle(factor)


def sequence_layer(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    _, steps, features = shape
    choice = draw(
        st.sampled_from(
            [
                "linear",
                "norm",
                "rnn",
                "rnn",
                "mha",
                "encoder",
                "conv1d",
                "bn1d",
                "pool1d",
                "flatten",
                "elementwise",
                "plumbing",
                "positions",
                "llama",
            ]
            + (["residual", "concat", "sequential", "repeat", "multiply"] if depth < MAX_DEPTH else [])
        )
    )
    if choice in ("bn", "bn1d") and not batch_norm_fits(shape):
        choice = "elementwise"
    if choice == "linear":
        return linear(draw, shape)
    if choice == "norm":
        return layer_norm(draw, shape)
    if choice == "rnn":
        return recurrent(draw, shape)
    if choice in ("mha", "encoder"):
        heads = draw(st.sampled_from([h for h in range(1, features + 1) if features % h == 0]))
        causal = draw(st.booleans())
        if choice == "mha":
            spec = {"type": "MultiheadAttention", "num_heads": heads, "causal": causal}
            return maybe(draw, spec, embed_dim=features), SelfAttention(
                features, heads, batch_first=True, causal=causal
            )
        ff = draw(st.integers(1, 16))
        act = draw(st.sampled_from(["relu", "gelu", "gelu_tanh"]))
        spec = {"type": "TransformerEncoderLayer", "nhead": heads, "dim_feedforward": ff, "activation": act}
        module = TransformerEncoderLayer(
            features,
            heads,
            dim_feedforward=ff,
            activation=nn.GELU(approximate="tanh") if act == "gelu_tanh" else act,
            batch_first=True,
            causal=causal,
        )
        return maybe(draw, spec | {"causal": causal}, d_model=features), module
    if choice == "plumbing":
        return plumbing(draw, shape)
    if choice == "positions":
        return positions(draw, shape)
    if choice == "llama":
        return llama_layer(draw, shape)
    if choice == "conv1d":  # [B, C, L]: dimension 1 is channels
        out, kernel = draw(st.integers(1, 6)), draw(st.integers(1, features))
        spec = maybe(draw, {"type": "Conv1d", "out_channels": out, "kernel_size": kernel}, in_channels=steps)
        return spec, nn.Conv1d(steps, out, kernel)
    if choice == "bn1d":
        return maybe(draw, {"type": "BatchNorm1d"}, num_features=steps), nn.BatchNorm1d(steps)
    if choice == "pool1d":
        kernel = draw(st.integers(1, features))
        kind = draw(st.sampled_from(["MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d"]))
        if kind == "AdaptiveAvgPool1d":
            return {"type": kind, "output_size": kernel}, nn.AdaptiveAvgPool1d(kernel)
        return {"type": kind, "kernel_size": kernel}, POOLS_1D[kind](kernel)
    if choice == "flatten":
        return {"type": "Flatten"}, nn.Flatten()
    if choice == "elementwise":
        return elementwise(draw, shape)
    if choice == "residual":
        return residual(draw, shape, depth)
    if choice == "concat":
        return concat_linear(draw, shape)
    if choice in ("repeat", "multiply"):
        return repeat(draw, shape) if choice == "repeat" else multiply(draw, shape)
    return sequential(draw, shape, depth)


def plumbing(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """Transpose, Permute, Select, Slice or Mean, on dimensions the input has."""
    rank = len(shape)
    kind = draw(st.sampled_from(["Transpose", "Permute", "Select", "Slice", "Mean"]))
    dim = draw(st.integers(-rank, rank - 1))
    if kind == "Transpose":
        other = draw(st.integers(0, rank - 1))
        return {"type": kind, "dim0": dim, "dim1": other}, Transpose(dim, other)
    if kind == "Permute":
        dims = draw(st.permutations(range(rank)))
        return {"type": kind, "dims": list(dims)}, Permute(tuple(dims))
    if kind == "Select" and rank > 2:  # keeps at least [B, F]
        index = draw(st.integers(-shape[dim], shape[dim] - 1))
        return {"type": kind, "dim": dim, "index": index}, Select(dim, index)
    if kind == "Mean" and rank > 2:
        keep = draw(st.booleans())
        return {"type": kind, "dim": dim, "keepdim": keep}, Mean(dim, keep)
    start = draw(st.integers(-shape[dim], shape[dim] - 1))
    step = draw(st.integers(1, 3))
    return {"type": "Slice", "dim": dim, "start": start, "step": step}, Slice(dim, start, None, step)


def positions(draw: st.DrawFn, shape: torch.Size) -> Layer:
    steps, width = shape[1], shape[2]
    kind = draw(st.sampled_from(["ClassToken", "PositionalEmbedding", "SinusoidalPositionalEncoding"]))
    if kind == "ClassToken":
        return maybe(draw, {"type": kind}, embed_dim=width), ClassToken(width)
    length = steps + draw(st.integers(0, 3))
    if kind == "PositionalEmbedding":
        spec = maybe(draw, {"type": kind, "num_positions": length}, embedding_dim=width)
        return spec, PositionalEmbedding(length, width)
    spec = maybe(draw, {"type": kind, "max_len": length}, embedding_dim=width)
    return spec, SinusoidalPositionalEncoding(length, width)


def llama_layer(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """RMSNorm, SwiGLU, or causal self-attention with rotary positions (even head sizes) and GQA."""
    width = shape[-1]
    kind = draw(st.sampled_from(["RMSNorm", "SwiGLU", "CausalSelfAttention"]))
    even_heads = [h for h in range(1, width + 1) if width % h == 0 and (width // h) % 2 == 0]
    if kind == "CausalSelfAttention" and even_heads:
        heads = draw(st.sampled_from(even_heads))
        kv_heads = draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0]))
        spec = {"type": kind, "num_heads": heads, "num_kv_heads": kv_heads}
        return maybe(draw, spec, embed_dim=width), CausalSelfAttention(width, heads, kv_heads)
    if kind == "SwiGLU":
        hidden = draw(st.integers(1, 12))
        return maybe(draw, {"type": kind, "hidden_features": hidden}, in_features=width), SwiGLU(
            width, hidden
        )
    return maybe(draw, {"type": "RMSNorm"}, normalized_shape=[width]), nn.RMSNorm(width)


def recurrent(draw: st.DrawFn, shape: torch.Size) -> Layer:
    features = shape[-1]
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    hidden, layers = draw(st.integers(1, 8)), draw(st.integers(1, 2))
    bidirectional, last = draw(st.booleans()), draw(st.booleans())
    args = {"hidden_size": hidden, "num_layers": layers, "bidirectional": bidirectional}
    if kind == "LSTM" and hidden > 1 and draw(st.booleans()):
        args["proj_size"] = draw(st.integers(1, hidden - 1))
    module = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}[kind](features, batch_first=True, **args)
    spec = maybe(draw, {"type": kind, **args, "output": "last" if last else "sequence"}, input_size=features)
    return spec, last_step(module) if last else module


def flat_layer(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    features = shape[-1]
    choice = draw(
        st.sampled_from(
            ["linear", "linear", "bn1d", "norm", "rmsnorm", "elementwise", "unflatten"]
            + (["residual", "concat", "sequential", "repeat", "multiply"] if depth < MAX_DEPTH else [])
        )
    )
    if choice in ("bn", "bn1d") and not batch_norm_fits(shape):
        choice = "elementwise"
    if choice == "linear":
        return linear(draw, shape)
    if choice == "bn1d":
        return maybe(draw, {"type": "BatchNorm1d"}, num_features=features), nn.BatchNorm1d(features)
    if choice == "norm":
        return layer_norm(draw, shape)
    if choice == "rmsnorm":
        return maybe(draw, {"type": "RMSNorm"}, normalized_shape=[features]), nn.RMSNorm(features)
    if choice == "elementwise":
        return elementwise(draw, shape)
    if choice == "unflatten":  # to a sequence [B, a, F / a] or an image [B, F, 1, 1]
        divisor = draw(st.sampled_from([d for d in range(1, features + 1) if features % d == 0]))
        sizes = [divisor, features // divisor] if draw(st.booleans()) else [features, 1, 1]
        return {"type": "Unflatten", "dim": 1, "unflattened_size": sizes}, nn.Unflatten(1, tuple(sizes))
    if choice == "residual":
        return residual(draw, shape, depth)
    if choice == "concat":
        return concat_linear(draw, shape)
    if choice in ("repeat", "multiply"):
        return repeat(draw, shape) if choice == "repeat" else multiply(draw, shape)
    return sequential(draw, shape, depth)


def any_layer(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    by_rank = {4: image_layer, 3: sequence_layer, 2: flat_layer}
    return by_rank[len(shape)](draw, shape, depth)


# -- containers -----------------------------------------------------------------------------------


def shape_preserving(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """A layer whose output has the shape of its input (the body of a residual block)."""
    if len(shape) == 4 and draw(st.booleans()):
        return conv2d(draw, shape, out=shape[1], same=True)
    if len(shape) == 4 and batch_norm_fits(shape) and draw(st.booleans()):
        return {"type": "BatchNorm2d"}, nn.BatchNorm2d(shape[1])
    if draw(st.booleans()):
        return linear(draw, shape, out=shape[-1])
    return elementwise(draw, shape)


def residual(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    body = [shape_preserving(draw, shape) for _ in range(draw(st.integers(1, 3)))]
    spec = {"type": "Residual", "layers": [s for s, _ in body]}
    if len(shape) != 4 and draw(st.booleans()):  # project both paths to a new width
        width = draw(st.integers(1, 8))
        body.append(linear(draw, shape, out=width))
        shortcut = linear(draw, shape, out=width)
        spec = {"type": "Residual", "layers": [s for s, _ in body], "shortcut": [shortcut[0]]}
        return spec, Residual(nn.Sequential(*(m for _, m in body)), nn.Sequential(shortcut[1]))
    return spec, Residual(nn.Sequential(*(m for _, m in body)))


def repeat(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """1-3 copies of a shape-preserving block, each with its own parameters."""
    block = [shape_preserving(draw, shape) for _ in range(draw(st.integers(1, 2)))]
    times = draw(st.integers(1, 3))
    copies = [nn.Sequential(*(copy.deepcopy(m) for _, m in block)) for _ in range(times)]
    return {"type": "Repeat", "times": times, "layers": [s for s, _ in block]}, nn.Sequential(*copies)


def multiply(draw: st.DrawFn, shape: torch.Size) -> Layer:
    """The product of 1-3 branches: the input itself, a shape-preserving layer, or a mean over one
    dimension kept as size 1 (broadcast back, as squeeze-excitation's gate is)."""
    specs, modules = [], []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["identity", "layer", "mean"]))
        if kind == "identity":
            specs.append([])
            modules.append(nn.Sequential())
        elif kind == "layer":
            spec, module = shape_preserving(draw, shape)
            specs.append([spec])
            modules.append(nn.Sequential(module))
        else:
            dim = draw(st.integers(1, len(shape) - 1))
            specs.append([{"type": "Mean", "dim": dim, "keepdim": True}])
            modules.append(nn.Sequential(Mean(dim, keepdim=True)))
    return {"type": "Multiply", "branches": specs}, Multiply(modules)


def concat_linear(draw: st.DrawFn, shape: torch.Size) -> Layer:
    branches = [linear(draw, shape) for _ in range(draw(st.integers(1, 3)))]
    spec = {"type": "Concat", "branches": [[s] for s, _ in branches], "dim": -1}
    return spec, Concat([nn.Sequential(m) for _, m in branches], dim=-1)


def sequential(draw: st.DrawFn, shape: torch.Size, depth: int) -> Layer:
    x = torch.zeros(shape)
    specs, modules = [], []
    for _ in range(draw(st.integers(1, 3))):
        spec, module = any_layer(draw, x.shape, depth + 1)
        x = run(module, x)
        specs.append(spec)
        modules.append(module)
    return {"type": "Sequential", "layers": specs}, nn.Sequential(*modules)


def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in training mode, as the service traces (a batch norm needs two values)."""
    with torch.no_grad():
        return module.train()(x)


def batch_norm_fits(shape: torch.Size, groups: int | None = None) -> bool:
    """In training mode a batch norm needs more than one value per channel (group norm: group)."""
    return math.prod(shape) > (groups or shape[1])


# -- whole stacks ---------------------------------------------------------------------------------


@st.composite
def inputs(draw: st.DrawFn) -> tuple[list[dict], list[nn.Module], torch.Tensor, str]:
    """A random input tensor, and for token ids the Embedding that reads them."""
    batch = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["image", "sequence", "flat", "tokens"]))
    if kind == "image":
        shape = (batch, draw(st.integers(1, 6)), draw(st.integers(1, 12)), draw(st.integers(1, 12)))
        return [], [], torch.randn(shape), "float32"
    if kind == "sequence":
        shape = (batch, draw(st.integers(1, 6)), draw(st.integers(1, 12)))
        return [], [], torch.randn(shape), "float32"
    if kind == "flat":
        return [], [], torch.randn(batch, draw(st.integers(1, 16))), "float32"
    vocab, dim = draw(st.integers(2, 50)), draw(st.integers(1, 12))
    tokens = torch.randint(0, vocab, (batch, draw(st.integers(1, 8))))
    spec = {"type": "Embedding", "num_embeddings": vocab, "embedding_dim": dim}
    return [spec], [nn.Embedding(vocab, dim)], tokens, "int64"


@st.composite
def valid_stacks(draw: st.DrawFn, max_layers: int = 6) -> Stack:
    specs, modules, x0, dtype = draw(inputs())
    x = run(modules[0], x0) if modules else x0
    for _ in range(draw(st.integers(1, max_layers))):
        spec, module = any_layer(draw, x.shape, 0)
        x = run(module, x)  # real torch: the drawn stack really fits
        specs.append(spec)
        modules.append(module)
    return Stack(specs, modules, x0, dtype)


def summarize(client, stack: Stack) -> dict:
    response = client.post(URL, json=stack.request())
    assert response.status_code == 200, response.text
    return response.json()


@PROPERTY_SETTINGS
@given(stack=valid_stacks())
def test_summary_equals_the_same_stack_built_in_torch(client, stack: Stack) -> None:
    summary = summarize(client, stack)
    model = stack.model()
    shapes, out_shape = output_shapes(model, stack.x)
    total, trainable = count_params(model)

    assert summary["output_shape"] == out_shape
    assert (summary["total_params"], summary["trainable_params"]) == (total, trainable)
    assert summary["model_repr"] == str(model)
    top = [layer for layer in summary["layers"] if layer["depth"] == 0]
    assert [layer["path"] for layer in top] == [str(i) for i in range(len(stack.modules))]
    for layer, module in zip(top, stack.modules, strict=True):
        assert layer["num_params"] == count_params(module)[0], layer["path"]
    for layer in summary["layers"]:
        assert layer["output_shape"] == shapes[layer["path"]], layer["path"]


# -- invalid stacks: a valid prefix, then one layer torch refuses ---------------------------------

Breaker = tuple[dict, Callable[[], nn.Module]]  # the bad layer's spec, and the same in torch


def breakers(shape: torch.Size) -> list[Breaker]:
    """Layers that cannot take an input of ``shape`` (built lazily: some fail on construction)."""
    rank, last, wrong = len(shape), shape[-1], shape[-1] + 3
    found: list[Breaker] = [
        ({"type": "Linear", "in_features": wrong, "out_features": 4}, lambda: nn.Linear(wrong, 4)),
    ]
    if last > 1:  # torch would broadcast a width-1 input onto the body's output
        found.append(
            (
                {"type": "Residual", "layers": [{"type": "Linear", "out_features": last + 1}]},
                lambda: Residual(nn.Sequential(nn.Linear(last, last + 1))),
            )
        )
    if rank != 4:
        found.append(({"type": "BatchNorm2d"}, lambda: nn.BatchNorm2d(shape[1])))
    if rank == 4:
        channels, height, width = shape[1:]
        found += [
            ({"type": "BatchNorm2d", "num_features": channels + 1}, lambda: nn.BatchNorm2d(channels + 1)),
            (
                {"type": "Conv2d", "in_channels": channels + 2, "out_channels": 2, "kernel_size": 1},
                lambda: nn.Conv2d(channels + 2, 2, 1),
            ),
            (
                {"type": "Conv2d", "out_channels": 2, "kernel_size": max(height, width) + 1},
                lambda: nn.Conv2d(channels, 2, max(height, width) + 1),
            ),
            (
                {"type": "MaxPool2d", "kernel_size": max(height, width) + 1},
                lambda: nn.MaxPool2d(max(height, width) + 1),
            ),
            ({"type": "LSTM", "hidden_size": 4}, lambda: LSTM(last, 4, batch_first=True)),
            ({"type": "GroupNorm", "num_groups": channels + 1}, lambda: nn.GroupNorm(channels + 1, channels)),
        ]
        if min(height, width) >= 2:  # a 2x2 or 3x3 kernel without padding shrinks it, 1x1 does not
            found.append(
                (
                    {
                        "type": "Concat",
                        "branches": [
                            [{"type": "Conv2d", "out_channels": 2, "kernel_size": 1}],
                            [{"type": "Conv2d", "out_channels": 2, "kernel_size": min(3, height, width)}],
                        ],
                    },
                    lambda: Concat(
                        [
                            nn.Sequential(nn.Conv2d(channels, 2, 1)),
                            nn.Sequential(nn.Conv2d(channels, 2, min(3, height, width))),
                        ]
                    ),
                )
            )
    if rank == 3:
        found += [
            (
                {"type": "LSTM", "input_size": wrong, "hidden_size": 3},
                lambda: LSTM(wrong, 3, batch_first=True),
            ),
            ({"type": "BatchNorm1d", "num_features": shape[1] + 1}, lambda: nn.BatchNorm1d(shape[1] + 1)),
            ({"type": "Select", "dim": 1, "index": shape[1]}, lambda: Select(1, shape[1])),
            ({"type": "Permute", "dims": [0, 1]}, lambda: Permute((0, 1))),
        ]
        if last > 1:
            found.append(
                ({"type": "MultiheadAttention", "num_heads": last + 1}, lambda: SelfAttention(last, last + 1))
            )
        if shape[1] > 1:  # a position table one shorter than the sequence
            found.append(
                (
                    {"type": "PositionalEmbedding", "num_positions": shape[1] - 1},
                    lambda: PositionalEmbedding(shape[1] - 1, last),
                )
            )
    if rank == 2:
        found += [
            ({"type": "BatchNorm1d", "num_features": wrong}, lambda: nn.BatchNorm1d(wrong)),
            (
                {"type": "TransformerEncoderLayer", "d_model": wrong, "nhead": 1},
                lambda: nn.TransformerEncoderLayer(wrong, 1, batch_first=True),
            ),
        ]
    return found


def torch_refuses(breaker: Callable[[], nn.Module], x: torch.Tensor) -> bool:
    try:
        run(breaker(), x)
    except (RuntimeError, ValueError, AssertionError, IndexError):
        return True
    return False


@st.composite
def invalid_stacks(draw: st.DrawFn) -> tuple[Stack, int]:
    """A valid stack, one layer that cannot take its output, then more layers; the bad index."""
    stack = draw(valid_stacks(max_layers=3))
    x = run(stack.model(), stack.x)
    spec, build = draw(st.sampled_from(breakers(x.shape)))
    assert torch_refuses(build, x), f"the test's breaker {spec} fits {list(x.shape)}"
    bad = len(stack.specs)
    suffix = draw(st.lists(st.sampled_from([{"type": "ReLU"}, {"type": "Flatten"}]), max_size=2))
    return Stack([*stack.specs, spec, *suffix], [], stack.x, stack.input_dtype), bad


@PROPERTY_SETTINGS
@given(case=invalid_stacks())
def test_invalid_stack_is_a_422_naming_the_layer(client, case: tuple[Stack, int]) -> None:
    stack, bad = case
    response = client.post(URL, json=stack.request())
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all(error["loc"][:4] == ["body", "model", "layers", bad] for error in detail), detail
    assert all(error["msg"] for error in detail)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 5, 7), (2, 9)])
def test_every_breaker_is_refused_by_torch(shape: tuple[int, ...]) -> None:
    """The invalid-stack generator only produces layers real PyTorch refuses too."""
    x = torch.randn(shape)
    for spec, build in breakers(x.shape):
        assert torch_refuses(build, x), spec
