"""StochasticDepth (torchvision.ops.StochasticDepth's semantics) on real tensors: the identity in
eval; in training each sample ("row") or the whole batch ("batch") is dropped with probability p
and what is kept is scaled by 1 / (1 - p), so the expectation is the input. Built from the spec, as
the service builds it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layers import ModelSpec
from layers.analysis.trace import trace_model


def build(p: float, mode: str, shape: tuple[int, ...]) -> nn.Module:
    layer = {"type": "StochasticDepth", "p": p, "mode": mode}
    return trace_model(ModelSpec(layers=[layer]), shape).spec.build()


def within(count: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    """Whether ``count`` successes of ``trials`` fit a binomial with probability ``p``."""
    return abs(count - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_eval_is_the_identity(p: float, mode: str) -> None:
    model = build(p, mode, (8, 3, 4)).eval()
    x = torch.randn(8, 3, 4)
    assert model(x) is x


def test_row_mode_drops_whole_samples_with_probability_p_and_rescales_the_rest() -> None:
    p, batch = 0.3, 4000
    model = build(p, "row", (batch, 3, 2)).train()
    x = torch.randn(batch, 3, 2)
    torch.manual_seed(0)
    y = model(x)
    dropped = (y == 0).flatten(1).all(dim=1)
    kept = torch.isclose(y, x / (1 - p), rtol=1e-6, atol=0).flatten(1).all(dim=1)
    assert bool((dropped | kept).all()), "every sample is either dropped whole or kept whole"
    assert within(int(dropped.sum()), batch, p)
    assert 0 < int(dropped.sum()) < batch


def test_batch_mode_drops_the_whole_batch_together() -> None:
    p, calls = 0.25, 2000
    model = build(p, "batch", (8, 5)).train()
    x = torch.randn(8, 5)
    torch.manual_seed(0)
    dropped = 0
    for _ in range(calls):
        y = model(x)
        if bool((y == 0).all()):
            dropped += 1
        else:
            torch.testing.assert_close(y, x / (1 - p))
    assert within(dropped, calls, p)


def test_the_expectation_is_the_input() -> None:
    model = build(0.5, "row", (20000, 4)).train()
    x = torch.ones(20000, 4)
    torch.manual_seed(0)
    assert abs(model(x).mean().item() - 1.0) < 0.03  # sd of the mean: 1 / sqrt(20000)


def test_p_zero_keeps_and_p_one_drops_everything_when_training() -> None:
    x = torch.randn(6, 3)
    assert build(0.0, "row", (6, 3)).train()(x) is x
    for mode in ("row", "batch"):
        y = build(1.0, mode, (6, 3)).train()(x)
        assert torch.equal(y, torch.zeros_like(x))  # nothing kept, nothing divided by zero


def test_gradient_flows_through_kept_samples_only_scaled_by_the_survival_rate() -> None:
    p = 0.5
    model = build(p, "row", (64, 3)).train()
    x = torch.randn(64, 3, requires_grad=True)
    torch.manual_seed(1)
    y = model(x)
    y.sum().backward()
    kept = (y != 0).all(dim=1, keepdim=True).float()
    torch.testing.assert_close(x.grad, kept.expand(-1, 3) / (1 - p))


def test_a_dropped_residual_branch_leaves_the_shortcut(client) -> None:
    """Last on a Residual's branch, it drops the block: y = x for a dropped sample."""
    block = {
        "type": "Residual",
        "layers": [{"type": "Linear", "out_features": 4}, {"type": "StochasticDepth", "p": 0.5}],
    }
    model = trace_model(ModelSpec(layers=[block]), (512, 4)).spec.build().train()
    x = torch.randn(512, 4)
    torch.manual_seed(0)
    y = model(x)
    same = (y == x).all(dim=1)
    assert within(int(same.sum()), 512, 0.5)
    with torch.no_grad():
        branch = model[0].layers[0](x) * 2  # kept: the branch scaled by 1 / (1 - p)
    torch.testing.assert_close(y[~same], (x + branch)[~same])
