"""Attention layers, used as self-attention over [B, T, E] sequences."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from layers.language.base import (
    LayerSpec,
    OptionalSize,
    Shape,
    Size,
    expect_divisible,
    expect_rank,
    infer_size,
)


def causal_mask(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """The [T, T] float mask that hides later positions (-inf above the diagonal), as torch builds it."""
    steps = x.shape[1] if batch_first and x.dim() == 3 else x.shape[0]
    return nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=x.dtype)


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with query = key = value = the input; returns the output only.

    With ``causal``, position t attends to positions up to t only (a decoder's self-attention).
    """

    def __init__(self, *args: Any, causal: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            mask = causal_mask(x, self.batch_first)
            return super().forward(x, x, x, need_weights=False, attn_mask=mask, is_causal=True)[0]
        return super().forward(x, x, x, need_weights=False)[0]

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` taking one input; with ``causal``, its self-attention is masked."""

    def __init__(self, *args: Any, causal: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return super().forward(x, src_mask=causal_mask(x, self.self_attn.batch_first), is_causal=True)
        return super().forward(x)

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


def feedforward_activation(name: str) -> str | nn.Module:
    """torch takes "relu" and "gelu" by name; GELU's tanh approximation is passed as a module."""
    return nn.GELU(approximate="tanh") if name == "gelu_tanh" else name


class MultiheadAttentionSpec(LayerSpec):
    """Multi-head self-attention: every position attends to every other."""

    category: ClassVar[str] = "attention"
    type: Literal["MultiheadAttention"] = "MultiheadAttention"
    embed_dim: OptionalSize = Field(None, description="model width; inferred from the input")
    num_heads: Size
    dropout: float = Field(0.0, ge=0.0, le=1.0)
    bias: bool = Field(
        True, description="a bias on the input (q, k, v) and output projections, as torch has one"
    )
    batch_first: bool = Field(True, description="input is [B, T, E] (PyTorch's default is False)")
    causal: bool = Field(False, description="mask later positions, so position t sees only 0..t (a decoder)")
    add_bias_kv: bool = Field(
        False, description="learned bias_k and bias_v appended to the keys and values as one more position"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.embed_dim is not None and self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self

    @field_validator("add_bias_kv")
    @classmethod
    def _not_with_causal(cls, add_bias_kv: bool, info: ValidationInfo) -> bool:
        # torch's causal path (is_causal) drops the mask it would pad for the added position, so
        # no query would ever attend to it: the combination is refused rather than left unused.
        if add_bias_kv and info.data.get("causal"):
            raise ValueError(
                "add_bias_kv cannot be combined with causal: torch never attends to the added position"
            )
        return add_bias_kv

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        embed_dim = infer_size(self.embed_dim, shape, -1, "embed_dim")
        expect_divisible(embed_dim, self.num_heads, "num_heads", "embed_dim")
        return self.model_copy(update={"embed_dim": embed_dim})

    def build(self) -> nn.Module:
        return SelfAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.bias,
            batch_first=self.batch_first,
            add_bias_kv=self.add_bias_kv,
            causal=self.causal,
        )


class TransformerEncoderLayerSpec(LayerSpec):
    """Transformer encoder block: self-attention then a feed-forward network, each with a residual."""

    category: ClassVar[str] = "attention"
    type: Literal["TransformerEncoderLayer"] = "TransformerEncoderLayer"
    d_model: OptionalSize = Field(None, description="model width; inferred from the input")
    nhead: Size
    dim_feedforward: Size = 2048
    dropout: float = Field(0.1, ge=0.0, le=1.0)
    activation: Literal["relu", "gelu", "gelu_tanh"] = Field(
        "relu", description="of the feed-forward network; gelu_tanh is GELU's tanh approximation (GPT-2)"
    )
    layer_norm_eps: float = Field(1e-5, gt=0)
    batch_first: bool = Field(True, description="input is [B, T, E] (PyTorch's default is False)")
    norm_first: bool = False
    bias: bool = Field(True, description="a bias on every linear and layer norm (torch has one flag for all)")
    causal: bool = Field(False, description="mask later positions, so position t sees only 0..t (a decoder)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.d_model is not None and self.d_model % self.nhead:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        return self

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        d_model = infer_size(self.d_model, shape, -1, "d_model")
        expect_divisible(d_model, self.nhead, "nhead", "d_model")
        return self.model_copy(update={"d_model": d_model})

    def build(self) -> nn.Module:
        args = self.arguments("causal", "activation")
        return TransformerEncoderLayer(
            **args, activation=feedforward_activation(self.activation), causal=self.causal
        )
