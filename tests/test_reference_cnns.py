"""SqueezeNet 1.1, GoogLeNet and ConvNeXt-Tiny written in the spec language must be torchvision's
(tests/torchvision_models.py, written as torchvision writes them): the published parameter counts,
the output shape and FLOPs at full size, and the same outputs on real tensors once torchvision's
weights are copied in (the module names differ, the order does not).

They need what issue 18 added: pools that round up (``ceil_mode``: SqueezeNet's and GoogLeNet's),
and ConvNeXt's ``LayerScale`` and ``StochasticDepth`` (LayerNorm over channels via ``Permute``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch_modules import count_params, flop_count
from torchvision_models import (
    CONVNEXT_TINY,
    INCEPTIONS,
    ConvNeXt,
    GoogLeNet,
    SqueezeNet11,
    copy_in_order,
    stochastic_depth_probs,
)

from layers import ModelSpec
from layers.analysis.trace import trace_model

URL = "/v1/models/summary"
TO_CHANNELS_LAST = {"type": "Permute", "dims": [0, 2, 3, 1]}
TO_CHANNELS_FIRST = {"type": "Permute", "dims": [0, 3, 1, 2]}


def max_pool(kernel: int, stride: int, padding: int = 0) -> dict:
    return {
        "type": "MaxPool2d",
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "ceil_mode": True,
    }


def fire(squeeze: int, expand: int) -> list[dict]:
    """SqueezeNet's Fire: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""
    return [
        {"type": "Conv2d", "out_channels": squeeze, "kernel_size": 1},
        {"type": "ReLU"},
        {
            "type": "Concat",
            "branches": [
                [{"type": "Conv2d", "out_channels": expand, "kernel_size": 1}, {"type": "ReLU"}],
                [
                    {"type": "Conv2d", "out_channels": expand, "kernel_size": 3, "padding": 1},
                    {"type": "ReLU"},
                ],
            ],
        },
    ]


def squeezenet_spec(classes: int = 1000) -> dict:
    return {
        "layers": [
            {"type": "Conv2d", "out_channels": 64, "kernel_size": 3, "stride": 2},
            {"type": "ReLU"},
            max_pool(3, 2),
            *fire(16, 64),
            *fire(16, 64),
            max_pool(3, 2),
            *fire(32, 128),
            *fire(32, 128),
            max_pool(3, 2),
            *fire(48, 192),
            *fire(48, 192),
            *fire(64, 256),
            *fire(64, 256),
            {"type": "Dropout", "p": 0.5},
            {"type": "Conv2d", "out_channels": classes, "kernel_size": 1},
            {"type": "ReLU"},
            {"type": "AdaptiveAvgPool2d", "output_size": 1},
            {"type": "Flatten"},
        ]
    }


def basic_conv(out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[dict]:
    """GoogLeNet's BasicConv2d: conv without bias, batch norm (eps 0.001), ReLU."""
    conv = {"type": "Conv2d", "out_channels": out, "kernel_size": kernel, "stride": stride}
    return [
        {**conv, "padding": padding, "bias": False},
        {"type": "BatchNorm2d", "eps": 0.001},
        {"type": "ReLU"},
    ]


def inception(name: str) -> dict:
    _, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj = INCEPTIONS[name]
    return {
        "type": "Concat",
        "branches": [
            basic_conv(ch1x1, 1),
            [*basic_conv(ch3x3red, 1), *basic_conv(ch3x3, 3, padding=1)],
            [*basic_conv(ch5x5red, 1), *basic_conv(ch5x5, 3, padding=1)],  # torchvision's 3x3, as there
            [max_pool(3, 1, padding=1), *basic_conv(pool_proj, 1)],
        ],
    }


def googlenet_spec(classes: int = 1000) -> dict:
    return {
        "layers": [
            *basic_conv(64, 7, stride=2, padding=3),
            max_pool(3, 2),
            *basic_conv(64, 1),
            *basic_conv(192, 3, padding=1),
            max_pool(3, 2),
            inception("3a"),
            inception("3b"),
            max_pool(3, 2),
            *(inception(name) for name in ("4a", "4b", "4c", "4d", "4e")),
            max_pool(2, 2),
            inception("5a"),
            inception("5b"),
            {"type": "AdaptiveAvgPool2d", "output_size": 1},
            {"type": "Flatten"},
            {"type": "Dropout", "p": 0.2},
            {"type": "Linear", "out_features": classes},
        ]
    }


def channel_norm() -> list[dict]:
    """torchvision's LayerNorm2d: a LayerNorm over the channels of [B, C, H, W]."""
    return [TO_CHANNELS_LAST, {"type": "LayerNorm", "eps": 1e-6}, TO_CHANNELS_FIRST]


def convnext_block(dim: int, drop: float, init: float = 1e-6) -> dict:
    """ConvNeXt's CNBlock: on the branch, a 7x7 depthwise conv, LayerNorm and an MLP channels-last,
    the layer scale, then stochastic depth."""
    return {
        "type": "Residual",
        "layers": [
            {"type": "Conv2d", "out_channels": dim, "kernel_size": 7, "padding": 3, "groups": dim},
            TO_CHANNELS_LAST,
            {"type": "LayerNorm", "eps": 1e-6},
            {"type": "Linear", "out_features": 4 * dim},
            {"type": "GELU"},
            {"type": "Linear", "out_features": dim},
            {"type": "LayerScale", "init": init},
            TO_CHANNELS_FIRST,
            {"type": "StochasticDepth", "p": drop, "mode": "row"},
        ],
    }


def convnext_spec(stages: tuple[tuple[int, int], ...] = CONVNEXT_TINY, classes: int = 1000) -> dict:
    probs = iter(stochastic_depth_probs(stages, 0.1))
    layers = [
        {"type": "Conv2d", "out_channels": stages[0][0], "kernel_size": 4, "stride": 4},
        *channel_norm(),
    ]
    for i, (dim, blocks) in enumerate(stages):
        layers += [convnext_block(dim, next(probs)) for _ in range(blocks)]
        if i + 1 < len(stages):
            layers += [
                *channel_norm(),
                {"type": "Conv2d", "out_channels": stages[i + 1][0], "kernel_size": 2, "stride": 2},
            ]
    head = [
        {"type": "Flatten"},
        {"type": "LayerNorm", "eps": 1e-6},
        {"type": "Linear", "out_features": classes},
    ]
    return {"layers": [*layers, {"type": "AdaptiveAvgPool2d", "output_size": 1}, *head]}


# name: (spec, torchvision's model, published parameter count, a small input where ceil_mode matters)
MODELS: dict[str, tuple[dict, Callable[[], nn.Module], int, list[int]]] = {
    "squeezenet1_1": (squeezenet_spec(), SqueezeNet11, 1_235_496, [2, 3, 99, 99]),
    "googlenet": (googlenet_spec(), GoogLeNet, 6_624_904, [2, 3, 100, 100]),
    "convnext_tiny": (convnext_spec(), ConvNeXt, 28_589_128, [2, 3, 64, 64]),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_full_size_model_has_torchvisions_parameters_shape_and_flops(client, name: str) -> None:
    spec, torchvision_model, params, _ = MODELS[name]
    response = client.post(URL, json={"model": spec, "input_shape": [1, 3, 224, 224]})
    assert response.status_code == 200, response.text
    summary = response.json()
    with torch.device("meta"):
        reference = torchvision_model()
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert summary["total_params"] == summary["trainable_params"] == count_params(reference)[0] == params
    assert summary["output_shape"] == list(reference(x).shape) == [1, 1000]
    assert summary["flops"] == flop_count(reference, x)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_computes_what_torchvisions_computes(name: str) -> None:
    spec, torchvision_model, _, input_shape = MODELS[name]
    ours = trace_model(ModelSpec.model_validate(spec), tuple(input_shape)).spec.build().eval()
    torch.manual_seed(0)
    theirs = torchvision_model().eval()
    with torch.no_grad():  # random factors and norms, so that every one of them shows in the output
        for parameter in theirs.parameters():
            if parameter.dim() == 1 or parameter.shape[1:] == (1, 1):
                parameter.uniform_(0.5, 1.5)
    copy_in_order(ours, theirs)
    x = torch.randn(input_shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_convnext_drops_the_same_blocks_as_torchvision_when_training() -> None:
    """In training, with the same seed, each block's StochasticDepth draws what torchvision's draws."""
    stages = ((8, 2), (16, 3))  # five blocks: drop probabilities 0, 0.025, ..., 0.1
    spec = convnext_spec(stages, classes=10)
    ours = trace_model(ModelSpec.model_validate(spec), (16, 3, 32, 32)).spec.build().train()
    theirs = ConvNeXt(stages, stochastic_depth_prob=0.1, num_classes=10).train()
    with torch.no_grad():
        for parameter in theirs.parameters():
            if parameter.dim() == 3:  # layer scale: large enough that a dropped block shows
                parameter.fill_(1.0)
    copy_in_order(ours, theirs)
    x = torch.randn(16, 3, 32, 32)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = theirs(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(x), expected)
    torch.manual_seed(0)
    first = ours(x)
    torch.manual_seed(1)
    assert not torch.allclose(ours(x), first), "a different draw must drop other blocks"


def test_layer_scale_starts_at_init_in_every_channel() -> None:
    model = trace_model(ModelSpec(layers=[{"type": "LayerScale", "init": 0.25}]), (2, 5, 7)).spec.build()
    assert torch.equal(model[0].gamma, torch.full((7,), 0.25))
    default = trace_model(ModelSpec(layers=[{"type": "LayerScale"}]), (2, 3)).spec.build()
    assert torch.equal(default[0].gamma, torch.full((3,), 1e-6))
