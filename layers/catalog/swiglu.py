"""SwiGLU: the gated feed-forward network of Llama and PaLM."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from layers.language.base import LayerSpec, OptionalSize, Shape, Size, infer_size


class SwiGLU(nn.Module):
    """w2(silu(w1(x)) * w3(x)): three linear layers, named as in Llama."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)  # gate
        self.w2 = nn.Linear(hidden_features, in_features, bias=bias)  # down
        self.w3 = nn.Linear(in_features, hidden_features, bias=bias)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (..., in_features)


class SwiGLUSpec(LayerSpec):
    """Gated feed-forward network (Llama): w2(silu(w1(x)) * w3(x)); output width = input width."""

    category: ClassVar[str] = "linear"
    type: Literal["SwiGLU"] = "SwiGLU"
    in_features: OptionalSize = Field(None, description="input and output width; inferred from the input")
    hidden_features: Size = Field(description="width of the gated hidden layer (11008 in Llama-2-7B)")
    bias: bool = False

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(update={"in_features": infer_size(self.in_features, shape, -1, "in_features")})

    def build(self) -> nn.Module:
        return SwiGLU(self.in_features, self.hidden_features, bias=self.bias)
