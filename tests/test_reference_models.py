"""Reference architectures, specified in JSON and written by hand in PyTorch, must agree exactly.

For each: parameter counts (``sum(p.numel())`` over the hand-written model), the output shape and
every layer's output shape (forward hooks on a real forward pass of a small real tensor),
``print(model)``, forward FLOPs (``FlopCounterMode`` on the hand-written model), and the outputs
themselves once the hand-written model's weights are loaded into the model built from the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch_modules import LSTM, Residual, count_params, flop_count, last_step, output_shapes

from layers import ModelSpec
from layers.analysis.trace import trace_model

URL = "/v1/models/summary"


def conv(out: int, k: int = 3, stride: int = 1, padding: int = 1) -> dict:
    return {
        "type": "Conv2d",
        "out_channels": out,
        "kernel_size": k,
        "stride": stride,
        "padding": padding,
        "bias": False,
    }


def basic_block(out: int, stride: int = 1, project: bool = False) -> list[dict]:
    """A ResNet basic block in the spec language: two 3x3 convs, identity or 1x1 projection shortcut."""
    block: dict = {
        "type": "Residual",
        "layers": [
            conv(out, stride=stride),
            {"type": "BatchNorm2d"},
            {"type": "ReLU"},
            conv(out),
            {"type": "BatchNorm2d"},
        ],
    }
    if project:
        block["shortcut"] = [conv(out, k=1, stride=stride, padding=0), {"type": "BatchNorm2d"}]
    return [block, {"type": "ReLU"}]


RESNET = {
    "layers": [
        conv(16),
        {"type": "BatchNorm2d"},
        {"type": "ReLU"},
        *basic_block(16),
        *basic_block(16),
        *basic_block(32, stride=2, project=True),
        *basic_block(32),
        *basic_block(64, stride=2, project=True),
        {"type": "AdaptiveAvgPool2d", "output_size": 1},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 10},
    ]
}


def resnet_torch() -> nn.Sequential:
    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return [Residual(body, shortcut), nn.ReLU()]

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        *block(16, 16),
        *block(16, 16),
        *block(16, 32, 2),
        *block(32, 32),
        *block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


class BasicBlock(nn.Module):
    """The torchvision way of writing the same block (other names, same computation)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


VGG = {
    "layers": [
        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 2},
        {"type": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d"},
        {"type": "ReLU"},
        {"type": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d"},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 2},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 128},
        {"type": "ReLU"},
        {"type": "Dropout", "p": 0.5},
        {"type": "Linear", "out_features": 10},
    ]
}


def vgg_torch() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


LSTM_MODEL = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 1000, "embedding_dim": 32},
        {"type": "LSTM", "hidden_size": 48, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
        {"type": "LayerNorm"},
        {"type": "LSTM", "hidden_size": 24, "output": "last"},
        {"type": "Linear", "out_features": 5},
    ]
}


def lstm_torch() -> nn.Sequential:
    return nn.Sequential(
        nn.Embedding(1000, 32),
        LSTM(32, 48, num_layers=2, bidirectional=True, dropout=0.1, batch_first=True),
        nn.LayerNorm(96),
        last_step(LSTM(96, 24, batch_first=True)),
        nn.Linear(24, 5),
    )


def transformer_spec(vocab: int, d: int, heads: int, ff: int, n: int) -> dict:
    layer = {"type": "TransformerEncoderLayer", "nhead": heads, "dim_feedforward": ff, "activation": "gelu"}
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": vocab, "embedding_dim": d},
            *[layer] * n,
            {"type": "LayerNorm"},
            {"type": "Linear", "out_features": vocab},
        ]
    }


def transformer_torch(vocab: int, d: int, heads: int, ff: int, n: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Embedding(vocab, d),
        *[nn.TransformerEncoderLayer(d, heads, ff, activation="gelu", batch_first=True) for _ in range(n)],
        nn.LayerNorm(d),
        nn.Linear(d, vocab),
    )


@dataclass
class Reference:
    spec: dict
    torch_model: Callable[[], nn.Module]
    input_shape: list[int]
    input_dtype: str = "float32"
    cpu_flops_countable: bool = True  # False where FlopCounterMode misses fused CPU kernels


REFERENCES = {
    "resnet": Reference(RESNET, resnet_torch, [2, 3, 32, 32]),
    "vgg": Reference(VGG, vgg_torch, [2, 3, 32, 32]),
    "lstm": Reference(LSTM_MODEL, lstm_torch, [4, 12], "int64", cpu_flops_countable=False),
    "transformer": Reference(
        transformer_spec(500, 64, 4, 128, 3),
        lambda: transformer_torch(500, 64, 4, 128, 3),
        [2, 16],
        "int64",
        cpu_flops_countable=False,
    ),
}


def real_input(ref: Reference) -> torch.Tensor:
    if ref.input_dtype == "int64":
        return torch.randint(0, 500, ref.input_shape)
    return torch.randn(ref.input_shape)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_architecture_matches_torch(client, name: str) -> None:
    ref = REFERENCES[name]
    body = {"model": ref.spec, "input_shape": ref.input_shape, "input_dtype": ref.input_dtype}
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    summary = response.json()

    torch.manual_seed(0)
    model = ref.torch_model()
    x = real_input(ref)
    total, trainable = count_params(model)
    assert summary["total_params"] == total
    assert summary["trainable_params"] == trainable
    assert summary["model_repr"] == str(model)

    shapes, out = output_shapes(model, x)
    assert summary["output_shape"] == out
    for layer in summary["layers"]:
        assert layer["output_shape"] == shapes[layer["path"]], layer["path"]
    assert {layer["path"] for layer in summary["layers"]} <= set(shapes)

    with torch.device("meta"):
        meta_model = ref.torch_model()
    meta_x = torch.empty(ref.input_shape, dtype=x.dtype, device="meta")
    assert summary["flops"] == flop_count(meta_model, meta_x)
    if ref.cpu_flops_countable:
        assert summary["flops"] == flop_count(model, x)
    assert summary["mult_adds"] == summary["flops"] // 2


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_architecture_computes_the_same_function(name: str) -> None:
    ref = REFERENCES[name]
    traced = trace_model(ModelSpec.model_validate(ref.spec), tuple(ref.input_shape), ref.input_dtype)
    torch.manual_seed(0)
    ours, theirs = traced.spec.build(), ref.torch_model()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    x = real_input(ref)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_resnet_equals_the_torchvision_style_blocks(client) -> None:
    """The same ResNet written the torchvision way (conv1/bn1/.../downsample): same counts, same output."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16),
        BasicBlock(16, 16),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 32),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    summary = client.post(URL, json={"model": RESNET, "input_shape": [2, 3, 32, 32]}).json()
    assert summary["total_params"] == count_params(model)[0]
    assert summary["output_shape"] == list(model(torch.randn(2, 3, 32, 32)).shape)
    blocks = [layer for layer in summary["layers"] if layer["type"] == "Residual"]
    assert [b["num_params"] for b in blocks] == [count_params(model[i])[0] for i in range(3, 8)]
    assert summary["flops"] == flop_count(model, torch.randn(2, 3, 32, 32))


def test_transformer_stack_equals_torch_transformer_encoder(client) -> None:
    """torch's own stacking (nn.TransformerEncoder) has the same parameter count and output."""
    d, heads, ff, n = 64, 4, 128, 3
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(d, heads, ff, batch_first=True), n, enable_nested_tensor=False
    )
    spec = {"layers": [{"type": "TransformerEncoderLayer", "nhead": heads, "dim_feedforward": ff}] * n}
    summary = client.post(URL, json={"model": spec, "input_shape": [2, 16, d]}).json()
    assert summary["total_params"] == count_params(encoder)[0]
    assert summary["output_shape"] == list(encoder(torch.randn(2, 16, d)).shape)


def transformer_params(vocab: int, d: int, ff: int, n: int) -> int:
    """Analytic parameter count of ``transformer_torch`` (checked against torch below)."""
    attention = 3 * d * d + 3 * d + d * d + d  # in_proj (q, k, v) and out_proj, with biases
    feed_forward = d * ff + ff + ff * d + d
    norms = 2 * 2 * d
    return vocab * d + n * (attention + feed_forward + norms) + 2 * d + d * vocab + vocab


@pytest.mark.parametrize(("vocab", "d", "heads", "ff", "n"), [(100, 16, 2, 64, 2), (37, 24, 3, 40, 3)])
def test_analytic_transformer_count_is_torchs(vocab: int, d: int, heads: int, ff: int, n: int) -> None:
    assert transformer_params(vocab, d, ff, n) == count_params(transformer_torch(vocab, d, heads, ff, n))[0]


def test_7b_transformer_is_summarised_under_default_limits(client) -> None:
    """32 layers, d_model 4096, 32 heads, feed-forward 16384, 2048 tokens: ~6.7e9 parameters,
    summarised on meta under the default limits (no timing asserted: that is bench/'s job)."""
    vocab, d, heads, ff, n, seq = 32000, 4096, 32, 16384, 32, 2048
    body = {
        "model": transformer_spec(vocab, d, heads, ff, n),
        "input_shape": [1, seq],
        "input_dtype": "int64",
    }
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["total_params"] == transformer_params(vocab, d, ff, n) > 6.5e9
    assert summary["param_bytes"] == 4 * summary["total_params"]
    assert summary["output_shape"] == [1, seq, vocab]
    assert len(summary["layers"]) == n + 3
    # FLOPs of the same model written in torch, run on meta (allocating it on CPU would need 27 GB)
    with torch.device("meta"):
        model = transformer_torch(vocab, d, heads, ff, n)
    assert summary["flops"] == flop_count(model, torch.empty(1, seq, dtype=torch.int64, device="meta"))
