"""Attention layers, used as self-attention over [B, T, E] sequences."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import nn

from layers.base import LayerSpec, OptionalSize, Shape, Size, expect_rank, infer_size
from layers.errors import ShapeError


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with query = key = value = the input; returns the output only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, x, x, need_weights=False)[0]


def _check_heads(embed_dim: int, heads: int, field: str) -> None:
    if embed_dim % heads:
        raise ShapeError(
            (field,),
            f"expected an embedding size divisible by {field} {heads}, got {embed_dim}",
            {"expected_divisor": heads, "got": embed_dim},
        )


class MultiheadAttentionSpec(LayerSpec):
    """Multi-head self-attention: every position attends to every other."""

    category: ClassVar[str] = "attention"
    type: Literal["MultiheadAttention"] = "MultiheadAttention"
    embed_dim: OptionalSize = Field(None, description="model width; inferred from the input")
    num_heads: Size
    dropout: float = Field(0.0, ge=0.0, le=1.0)
    bias: bool = True
    batch_first: bool = Field(True, description="input is [B, T, E] (PyTorch's default is False)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.embed_dim is not None and self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        embed_dim = infer_size(self.embed_dim, shape, -1, "embed_dim")
        _check_heads(embed_dim, self.num_heads, "num_heads")
        return self.model_copy(update={"embed_dim": embed_dim})

    def build(self) -> nn.Module:
        return SelfAttention(
            self.embed_dim, self.num_heads, dropout=self.dropout, bias=self.bias, batch_first=self.batch_first
        )


class TransformerEncoderLayerSpec(LayerSpec):
    """Transformer encoder block: self-attention then a feed-forward network, each with a residual."""

    category: ClassVar[str] = "attention"
    type: Literal["TransformerEncoderLayer"] = "TransformerEncoderLayer"
    d_model: OptionalSize = Field(None, description="model width; inferred from the input")
    nhead: Size
    dim_feedforward: Size = 2048
    dropout: float = Field(0.1, ge=0.0, le=1.0)
    activation: Literal["relu", "gelu"] = "relu"
    layer_norm_eps: float = Field(1e-5, gt=0)
    batch_first: bool = Field(True, description="input is [B, T, E] (PyTorch's default is False)")
    norm_first: bool = False
    bias: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.d_model is not None and self.d_model % self.nhead:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        return self

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        d_model = infer_size(self.d_model, shape, -1, "d_model")
        _check_heads(d_model, self.nhead, "nhead")
        return self.model_copy(update={"d_model": d_model})

    def build(self) -> nn.Module:
        return nn.TransformerEncoderLayer(**self.model_dump(exclude={"type"}))
