"""Attention layers: self-attention over [B, T, E] sequences, and (as graph nodes) attention to
other tensors (``key``, ``value``, a decoder's ``memory``) with masks.

Masks are torch's: boolean ones hide the positions that are True (``key_padding_mask``: [B, S],
True at padding), float ones are added to the attention scores. ``causal`` stays the layers' own
flag; given with a mask, both apply.
"""

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

ModuleClass = type[nn.Module]  # aliased: inside a spec class, `type` is the field


def causal_mask(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """The [T, T] float mask that hides later positions (-inf above the diagonal), as torch builds it."""
    steps = x.shape[1] if batch_first and x.dim() == 3 else x.shape[0]
    return nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=x.dtype)


def float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask as the float mask torch turns it into (-inf where True), so that it combines
    with a float causal mask (torch warns on a boolean and a float mask given together)."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))


def with_causal(mask: torch.Tensor | None, x: torch.Tensor, batch_first: bool) -> tuple[torch.Tensor, bool]:
    """The causal mask with ``mask`` (an attention mask the user gave) added, and whether the result
    is the causal mask alone (then torch may take the ``is_causal`` hint)."""
    causal = causal_mask(x, batch_first)
    if mask is None:
        return causal, True
    return causal + float_mask(mask, x.dtype), False


class _Causal:
    """The ``causal`` flag, which torch's attention modules do not take."""

    causal: bool

    def __init__(self, *args: Any, causal: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


class SelfAttention(_Causal, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with query = the input, key and value the input too unless given
    (value = key when only key is); returns the attention output only.

    With ``causal``, position t attends to positions up to t only (a decoder's self-attention).
    """

    def forward(
        self,
        x: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        key = x if key is None else key
        value = key if value is None else value
        if self.causal:
            mask, alone = with_causal(attn_mask, x, self.batch_first)
            padding = float_mask(key_padding_mask, x.dtype)
            return super().forward(
                x, key, value, padding, need_weights=False, attn_mask=mask, is_causal=alone
            )[0]
        return super().forward(x, key, value, key_padding_mask, need_weights=False, attn_mask=attn_mask)[0]


class TransformerEncoderLayer(_Causal, nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` taking its input and torch's masks; with ``causal``, its
    self-attention is masked."""

    def forward(
        self,
        x: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.causal:
            mask, alone = with_causal(src_mask, x, self.self_attn.batch_first)
            padding = float_mask(src_key_padding_mask, x.dtype)
            return super().forward(x, src_mask=mask, src_key_padding_mask=padding, is_causal=alone)
        return super().forward(x, src_mask, src_key_padding_mask)


class TransformerDecoderLayer(_Causal, nn.TransformerDecoderLayer):
    """``nn.TransformerDecoderLayer``: self-attention over its input (the target), attention to
    ``memory`` (the encoder's output), then a feed-forward network; with ``causal``, its
    self-attention is masked (torch's ``tgt_is_causal`` with the generated mask)."""

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        alone = False
        if self.causal:
            tgt_mask, alone = with_causal(tgt_mask, x, self.self_attn.batch_first)
            tgt_key_padding_mask = float_mask(tgt_key_padding_mask, x.dtype)
        return super().forward(
            x,
            memory,
            tgt_mask,
            memory_mask,
            tgt_key_padding_mask,
            memory_key_padding_mask,
            tgt_is_causal=alone,
        )


def feedforward_activation(name: str) -> str | nn.Module:
    """torch takes "relu" and "gelu" by name; GELU's tanh approximation is passed as a module."""
    return nn.GELU(approximate="tanh") if name == "gelu_tanh" else name


class MultiheadAttentionSpec(LayerSpec):
    """Multi-head attention: every position attends to every other (in a graph, to `key` and `value`)."""

    category: ClassVar[str] = "attention"
    tensor_args: ClassVar[tuple[str, ...]] = ("key", "value", "key_padding_mask", "attn_mask")
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
    kdim: OptionalSize = Field(
        None, description="features of the key (a graph node's `key` argument); embed_dim unless given"
    )
    vdim: OptionalSize = Field(
        None, description="features of the value (a graph node's `value` argument); embed_dim unless given"
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
        return self.model_copy(
            update={"embed_dim": embed_dim, "kdim": self.kdim or embed_dim, "vdim": self.vdim or embed_dim}
        )

    def build(self) -> nn.Module:
        return SelfAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.bias,
            batch_first=self.batch_first,
            add_bias_kv=self.add_bias_kv,
            kdim=self.kdim,
            vdim=self.vdim,
            causal=self.causal,
        )


class TransformerLayerSpec(LayerSpec):
    """Fields shared by the encoder and decoder layers, torch's own (not a registered type)."""

    category: ClassVar[str] = "attention"
    module_class: ClassVar[ModuleClass]
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
        activation = feedforward_activation(self.activation)
        return self.module_class(**args, activation=activation, causal=self.causal)


class TransformerEncoderLayerSpec(TransformerLayerSpec):
    """Transformer encoder block: self-attention then a feed-forward network, each with a residual."""

    module_class: ClassVar[ModuleClass] = TransformerEncoderLayer
    tensor_args: ClassVar[tuple[str, ...]] = ("src_mask", "src_key_padding_mask")
    type: Literal["TransformerEncoderLayer"] = "TransformerEncoderLayer"


class TransformerDecoderLayerSpec(TransformerLayerSpec):
    """Transformer decoder block: self-attention, attention to `memory` (a graph node's), feed-forward.

    Each with a residual; `memory` is the encoder's output, so the layer is used in a graph only.
    """

    module_class: ClassVar[ModuleClass] = TransformerDecoderLayer
    tensor_args: ClassVar[tuple[str, ...]] = (
        "memory",
        "tgt_mask",
        "memory_mask",
        "tgt_key_padding_mask",
        "memory_key_padding_mask",
    )
    required_tensor_args: ClassVar[tuple[str, ...]] = ("memory",)
    type: Literal["TransformerDecoderLayer"] = "TransformerDecoderLayer"
