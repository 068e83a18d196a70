"""``ceil_mode`` on the max and average pools: the summary's output shape is torch's on real
tensors over a grid of sizes, windows, strides and paddings, and where torch refuses a pool the
summary is a 422 naming it. Rounding up keeps a last, partial window only when it starts inside
the input or its left padding (torch's pooling_output_shape)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from layers import ModelSpec, SpecError
from layers.analysis.trace import trace_model

POOLS = {
    "MaxPool1d": nn.MaxPool1d,
    "MaxPool2d": nn.MaxPool2d,
    "AvgPool1d": nn.AvgPool1d,
    "AvgPool2d": nn.AvgPool2d,
}
URL = "/v1/models/summary"


def torch_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The output shape of ``module`` on a real tensor, or None where torch refuses the input."""
    try:
        return tuple(module(torch.randn(shape)).shape)
    except RuntimeError:
        return None


def summary_shape(layer: dict, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return trace_model(ModelSpec(layers=[layer]), shape).output_shape
    except SpecError:
        return None


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_output_shape_is_torchs_over_a_grid(pool: str) -> None:
    two_d = pool.endswith("2d")
    checked = differ = 0
    for size, kernel, stride, padding in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(3)):
        shape = (2, 3, size, size + 2) if two_d else (2, 3, size)
        results = []
        for ceil_mode in (False, True):
            layer = {"type": pool, "kernel_size": kernel, "stride": stride, "padding": padding}
            expected = torch_shape(POOLS[pool](kernel, stride, padding, ceil_mode=ceil_mode), shape)
            got = summary_shape({**layer, "ceil_mode": ceil_mode}, shape)
            assert got == expected, (layer, ceil_mode, shape)
            results.append(expected)
        checked += 1
        differ += results[0] != results[1]
    assert differ > checked // 10, "the grid must hold many sizes where rounding up changes the shape"


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_last_window_starting_in_the_right_padding_is_dropped(pool: str) -> None:
    """L 5, window 2, stride 2, padding 1: (5 + 2 - 2) / 2 rounds up to 3, so 4 windows, but the
    4th would start at 6, past the input and its left padding (5 + 1): torch keeps 3."""
    shape = (1, 2, 5, 5) if pool.endswith("2d") else (1, 2, 5)
    layer = {"type": pool, "kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}
    assert (
        summary_shape(layer, shape)[-1] == 3 == torch_shape(POOLS[pool](2, 2, 1, ceil_mode=True), shape)[-1]
    )
    floor = {**layer, "padding": 0}  # without padding, rounding up keeps the partial window at 4
    assert (
        summary_shape(floor, shape)[-1] == 3 and summary_shape({**floor, "ceil_mode": False}, shape)[-1] == 2
    )


def test_per_dimension_windows_round_up_each_dimension(client) -> None:
    layer = {
        "type": "MaxPool2d",
        "kernel_size": [3, 2],
        "stride": [2, 3],
        "padding": [1, 0],
        "ceil_mode": True,
    }
    response = client.post(URL, json={"model": {"layers": [layer]}, "input_shape": [2, 3, 10, 11]})
    assert response.status_code == 200, response.text
    expected = nn.MaxPool2d((3, 2), (2, 3), (1, 0), ceil_mode=True)(torch.randn(2, 3, 10, 11)).shape
    assert response.json()["output_shape"] == list(expected) == [2, 3, 6, 4]
    assert response.json()["model_repr"].count("ceil_mode=True") == 1


def test_a_pool_torch_refuses_is_a_422_naming_it(client) -> None:
    """Rounding up cannot save a window larger than the padded input: torch refuses, so do we."""
    pool = {"type": "MaxPool2d", "kernel_size": 4, "stride": 1, "ceil_mode": True}
    layers = [{"type": "Conv2d", "out_channels": 4, "kernel_size": 1}, pool]
    assert torch_shape(nn.MaxPool2d(4, 1, ceil_mode=True), (2, 4, 2, 2)) is None
    response = client.post(URL, json={"model": {"layers": layers}, "input_shape": [2, 3, 2, 2]})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "model", "layers", 1]
    assert "MaxPool2d" in error["msg"] and "[2, 4, 2, 2]" in error["msg"], error["msg"]
