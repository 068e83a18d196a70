"""Token positions: a learned class token, learned position embeddings, and the fixed sinusoidal
encoding. Each works on a sequence of embeddings [B, T, D]; D is inferred from the input."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.language.base import LayerSpec, OptionalSize, Shape, Size, expect_rank, infer_size, shape_str
from layers.language.errors import ShapeError


class ClassToken(nn.Module):
    """Prepends one learned token to the sequence: [B, T, D] -> [B, T + 1, D] (ViT's class_token)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # zeros, as torchvision's ViT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T + 1, D)

    def extra_repr(self) -> str:
        return f"embed_dim={self.token.shape[-1]}"


class PositionalEmbedding(nn.Module):
    """Adds a learned embedding of each position: x + weight[:T] (ViT, BERT, GPT-2's wpe)."""

    def __init__(self, num_positions: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_positions, embedding_dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[-2]]  # (B, T, D) + (T, D)

    def extra_repr(self) -> str:
        return f"num_positions={self.weight.shape[0]}, embedding_dim={self.weight.shape[1]}"


def sinusoids(max_len: int, dim: int) -> torch.Tensor:
    """The encoding of "Attention is all you need": pe[t, 2i] = sin(t / 10000^(2i/dim)), and cos
    at 2i + 1. [max_len, dim]."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: dim // 2])
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding of each position: x + pe[:T]. No parameters.

    ``pe`` is a non-persistent buffer: a pure function of (max_len, dim), rebuilt whenever the
    module is, so a state dict (and a saved safetensors file) holds only what training learned.
    """

    def __init__(self, max_len: int, embedding_dim: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoids(max_len, embedding_dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[-2]]  # (B, T, D) + (T, D)

    def extra_repr(self) -> str:
        return f"max_len={self.pe.shape[0]}, embedding_dim={self.pe.shape[1]}"


class PositionSpec(LayerSpec):
    """Category and width inference shared by the position layers (not a registered type)."""

    category: ClassVar[str] = "embedding"
    width_field: ClassVar[str] = "embedding_dim"

    def width(self, shape: Shape) -> int:
        expect_rank(shape, (3,), self.type)
        return infer_size(getattr(self, self.width_field), shape, -1, self.width_field)

    def check_length(self, shape: Shape, max_len: int, field: str) -> None:
        if shape[1] > max_len:
            raise ShapeError(
                (field,),
                f"the sequence has {shape[1]} positions (input {shape_str(shape)}), more than "
                f"{field} {max_len}",
                {"expected_at_most": max_len, "got": shape[1]},
            )


class ClassTokenSpec(PositionSpec):
    """Prepends one learned token along dimension 1: [B, T, D] -> [B, T + 1, D] (ViT's class token)."""

    width_field: ClassVar[str] = "embed_dim"
    type: Literal["ClassToken"] = "ClassToken"
    embed_dim: OptionalSize = Field(None, description="token width D; inferred from the input")

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(update={"embed_dim": self.width(shape)})

    def build(self) -> nn.Module:
        return ClassToken(self.embed_dim)


class PositionalEmbeddingSpec(PositionSpec):
    """Adds a learned [num_positions, D] table to the first T positions: x + weight[:T]."""

    type: Literal["PositionalEmbedding"] = "PositionalEmbedding"
    num_positions: Size = Field(
        description="the longest sequence it takes (e.g. 197 for ViT-B/16, 1024 for GPT-2)"
    )
    embedding_dim: OptionalSize = Field(None, description="width D; inferred from the input")

    def infer(self, shape: Shape) -> Self:
        dim = self.width(shape)
        self.check_length(shape, self.num_positions, "num_positions")
        return self.model_copy(update={"embedding_dim": dim})

    def build(self) -> nn.Module:
        return PositionalEmbedding(self.num_positions, self.embedding_dim)


class SinusoidalPositionalEncodingSpec(PositionSpec):
    """Adds the fixed sine/cosine encoding of "Attention is all you need"; no parameters."""

    type: Literal["SinusoidalPositionalEncoding"] = "SinusoidalPositionalEncoding"
    max_len: Size = Field(description="the longest sequence it takes")
    embedding_dim: OptionalSize = Field(None, description="width D; inferred from the input")

    def infer(self, shape: Shape) -> Self:
        dim = self.width(shape)
        self.check_length(shape, self.max_len, "max_len")
        return self.model_copy(update={"embedding_dim": dim})

    def build(self) -> nn.Module:
        return SinusoidalPositionalEncoding(self.max_len, self.embedding_dim)
