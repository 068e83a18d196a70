"""Dropout layers."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from layers.language.base import ShapePreservingSpec


class DropoutSpec(ShapePreservingSpec):
    """Zeroes elements with probability p during training."""

    category: ClassVar[str] = "dropout"
    type: Literal["Dropout"] = "Dropout"
    p: float = Field(0.5, ge=0.0, le=1.0)

    def build(self) -> nn.Module:
        return nn.Dropout(self.p)


class Dropout2dSpec(ShapePreservingSpec):
    """Zeroes whole channels with probability p during training."""

    category: ClassVar[str] = "dropout"
    type: Literal["Dropout2d"] = "Dropout2d"
    p: float = Field(0.5, ge=0.0, le=1.0)

    def build(self) -> nn.Module:
        return nn.Dropout2d(self.p)


DepthMode = Literal["row", "batch"]


class StochasticDepth(nn.Module):
    """Drops its whole input with probability p while training, and scales what it keeps by
    1 / (1 - p); the identity in eval. "row" draws once per sample (the batch dimension), "batch"
    once for the whole batch. Put last on a residual branch, it drops the block (ConvNeXt,
    EfficientNet). torchvision.ops.StochasticDepth's semantics, written here: torchvision is not
    a dependency."""

    def __init__(self, p: float, mode: DepthMode) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        keep = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)  # 1: kept
        if survival > 0.0:
            keep.div_(survival)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class StochasticDepthSpec(ShapePreservingSpec):
    """Drops a residual branch's whole output per sample (or batch) with probability p during training."""

    category: ClassVar[str] = "dropout"
    type: Literal["StochasticDepth"] = "StochasticDepth"
    p: float = Field(ge=0.0, le=1.0, description="probability of dropping; what is kept is scaled by 1/(1-p)")
    mode: DepthMode = Field(
        "row", description='"row": each sample of the batch is dropped on its own; "batch": all together'
    )

    def build(self) -> nn.Module:
        return StochasticDepth(self.p, self.mode)
