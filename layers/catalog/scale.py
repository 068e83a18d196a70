"""A learned scale per channel: ConvNeXt's layer scale ("gamma")."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.language.base import OptionalSize, ParameterValue, Shape, ShapePreservingSpec, infer_size


class LayerScale(nn.Module):
    """y = x * gamma, one learned factor per channel of the last dimension (gamma: [dim]).

    Started small (1e-6 in ConvNeXt and CaiT), it lets a deep residual stack begin close to the
    identity: each block's branch contributes almost nothing until training grows its factors.
    """

    def __init__(self, dim: int, init: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma  # (..., dim) * (dim,)

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[0]}"


class LayerScaleSpec(ShapePreservingSpec):
    """A learned factor per channel of the last dimension: x * gamma (ConvNeXt's layer scale)."""

    category: ClassVar[str] = "linear"  # a diagonal linear map
    type: Literal["LayerScale"] = "LayerScale"
    dim: OptionalSize = Field(None, description="channels of the last dimension; inferred from the input")
    init: ParameterValue = Field(1e-6, description="the factors' initial value (ConvNeXt: 1e-6)")

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(update={"dim": infer_size(self.dim, shape, -1, "dim", "channels")})

    def build(self) -> nn.Module:
        return LayerScale(self.dim, self.init)
