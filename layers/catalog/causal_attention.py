"""Llama-style causal self-attention: grouped-query heads, rotary positions, biases where asked
(Qwen2's on q, k and v; Whisper's on q, v and o).

Written as Llama writes it (q_proj, k_proj, v_proj, o_proj) and computed with torch's
``scaled_dot_product_attention(is_causal=True)``, which FlopCounterMode counts on meta.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from layers.language.base import (
    Float32,
    LayerSpec,
    OptionalSize,
    Shape,
    Size,
    expect_divisible,
    expect_rank,
    infer_size,
)
from layers.language.errors import ShapeError
from layers.language.flops import FlopCounter


def rotary_tables(
    steps: int, dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles t * theta^(-2i/d), each (T, d): pair i is (x_i, x_{i + d/2})."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (d/2,)
    angles = torch.outer(torch.arange(steps, device=device, dtype=torch.float32), inv_freq)  # (T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension, split in halves."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoPE) of x (B, heads, T, d): each pair rotated by its angle."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention over [B, T, E]; ``num_kv_heads`` < ``num_heads`` shares each
    key/value head among a group of query heads (grouped-query attention)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        rope: bool = True,
        rope_theta: float = 10000.0,
        qkv_bias: bool | tuple[bool, bool, bool] = False,
        out_bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = embed_dim // num_heads
        self.rope, self.rope_theta, self.dropout = rope, rope_theta, dropout
        q_bias, k_bias, v_bias = (qkv_bias,) * 3 if isinstance(qkv_bias, bool) else qkv_bias
        self.q_proj = nn.Linear(embed_dim, num_heads * self.head_dim, bias=q_bias)
        self.k_proj = nn.Linear(embed_dim, self.num_kv_heads * self.head_dim, bias=k_bias)
        self.v_proj = nn.Linear(embed_dim, self.num_kv_heads * self.head_dim, bias=v_bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, embed_dim, bias=out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        heads, kv_heads, head_dim = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(batch, steps, heads, head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(batch, steps, kv_heads, head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(batch, steps, kv_heads, head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        if self.rope:
            q, k = self.rotate(q, k)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
            enable_gqa=kv_heads != heads,
        )  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(batch, steps, -1))  # (B, T, E)

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k with their rotary position embedding."""
        cos, sin = rotary_tables(q.shape[-2], self.head_dim, self.rope_theta, q.device)
        return rotary(q, cos, sin), rotary(k, cos, sin)

    def extra_repr(self) -> str:
        rope = f"rope=True, rope_theta={self.rope_theta}" if self.rope else "rope=False"
        return f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, {rope}, dropout={self.dropout}"


class CausalSelfAttentionSpec(LayerSpec):
    """Llama-style causal self-attention: grouped-query heads, rotary positions (RoPE), no bias by default."""

    category: ClassVar[str] = "attention"
    type: Literal["CausalSelfAttention"] = "CausalSelfAttention"
    embed_dim: OptionalSize = Field(None, description="model width E; inferred from the input")
    num_heads: Size = Field(description="query heads; must divide embed_dim")
    num_kv_heads: OptionalSize = Field(
        None,
        description="key/value heads (grouped-query attention); must divide num_heads. Default num_heads",
    )
    rope: bool = Field(True, description="rotary position embedding on queries and keys")
    rope_theta: Float32 = Field(
        10000.0, gt=0, description="RoPE base (a float32, as the tables made from it)"
    )
    bias: bool = Field(
        False,
        description="shorthand: a bias on all four projections (q, k, v, o); qkv_bias and out_bias, "
        "when given, override it for theirs",
    )
    qkv_bias: bool | Annotated[list[bool], Field(min_length=3, max_length=3)] | None = Field(
        None,
        description="a bias on the q, k and v projections: one for all three, or [q, k, v] "
        "(Qwen2: true; Whisper: [true, false, true]). Default: bias",
    )
    out_bias: bool | None = Field(
        None, description="a bias on the output projection o (Qwen2: false). Default: bias"
    )
    dropout: float = Field(0.0, ge=0.0, le=1.0, description="on the attention weights, when training")

    @field_validator("num_heads")
    @classmethod
    def _heads_divide_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("embed_dim")
        if width is not None and width % heads:
            raise ValueError(f"num_heads ({heads}) must divide embed_dim ({width})")
        return heads

    @field_validator("num_kv_heads")
    @classmethod
    def _kv_heads_divide_heads(cls, kv_heads: int | None, info: ValidationInfo) -> int | None:
        heads = info.data.get("num_heads")
        if kv_heads is not None and heads is not None and heads % kv_heads:
            raise ValueError(f"num_kv_heads ({kv_heads}) must divide num_heads ({heads})")
        return kv_heads

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (3,), self.type)
        width = infer_size(self.embed_dim, shape, -1, "embed_dim")
        expect_divisible(width, self.num_heads, "num_heads", "embed_dim")
        if self.rope and (width // self.num_heads) % 2:
            raise ShapeError(
                ("rope",),
                f"rotary positions need an even head size; embed_dim {width} / num_heads {self.num_heads} "
                f"is {width // self.num_heads}",
                {"head_dim": width // self.num_heads},
            )
        qkv_bias, out_bias = self.biases()
        return self.model_copy(
            update={
                "embed_dim": width,
                "num_kv_heads": self.num_kv_heads or self.num_heads,
                "qkv_bias": qkv_bias,
                "out_bias": out_bias,
            }
        )

    def biases(self) -> tuple[bool | list[bool], bool]:
        """``qkv_bias`` and ``out_bias``, each ``bias`` where it is not given."""
        return (
            self.bias if self.qkv_bias is None else self.qkv_bias,
            self.bias if self.out_bias is None else self.out_bias,
        )

    def build(self) -> nn.Module:
        qkv_bias, out_bias = self.biases()
        return CausalSelfAttention(
            self.embed_dim,
            self.num_heads,
            self.num_kv_heads,
            rope=self.rope,
            rope_theta=self.rope_theta,
            qkv_bias=tuple(qkv_bias) if isinstance(qkv_bias, list) else qkv_bias,
            out_bias=out_bias,
            dropout=self.dropout,
        )

    def trace(
        self, module: nn.Module, x: torch.Tensor, counter: FlopCounter, **tensors: torch.Tensor
    ) -> tuple[Any, int]:
        # The rotation keeps q's and k's shapes and has no FLOPs torch counts, and its ~20
        # meta kernels would cost 25 ms a layer: the trace runs without it. (What it keeps for
        # backward counts in the memory estimate, which runs the module as it is.)
        module.rotate = _unrotated
        try:
            return super().trace(module, x, counter, **tensors)
        finally:
            del module.rotate


def _unrotated(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q, k
