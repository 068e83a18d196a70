"""Hand-written PyTorch references for the tests: what a PyTorch user would write by hand.

Written from ``torch.nn`` alone (nothing here imports ``layers``), so a test that compares a
summary with these modules compares the service with PyTorch, not with itself. Class and
attribute names follow the issue's contract (``MyLinear.linear``, ``Residual.layers``/``shortcut``)
so ``print(model)`` and parameter names can be compared exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class MyLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MyConv2d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, **kw
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(nn.Module):
    """Conv2d (no bias under batch norm) -> BatchNorm2d or Identity -> activation."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1, bn: bool = True, act=nn.ReLU
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, layers: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)


class Concat(nn.Module):
    def __init__(self, branches: list[nn.Module], dim: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Bilinear(nn.Bilinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, x)


class SelfAttention(nn.MultiheadAttention):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, x, x, need_weights=False)[0]


class _SequenceOut:
    """A recurrent module that returns its output sequence (or last step) instead of a tuple."""

    last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)[0]
        return out[:, -1] if self.last else out

    def extra_repr(self) -> str:
        return super().extra_repr() + (", output=last" if self.last else "")


class RNN(_SequenceOut, nn.RNN):
    pass


class LSTM(_SequenceOut, nn.LSTM):
    pass


class GRU(_SequenceOut, nn.GRU):
    pass


def last_step(module: _SequenceOut) -> _SequenceOut:
    module.last = True
    return module


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable), each tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def output_shapes(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, list[int]], list[int]]:
    """Run ``model`` on ``x`` with a forward hook on every submodule: {module path: output shape}."""
    shapes: dict[str, list[int]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, list(output.shape))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes, list(out.shape)


def flop_count(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()
