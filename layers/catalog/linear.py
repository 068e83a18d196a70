"""Linear maps, embeddings and shape-only layers."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

import torch
from pydantic import Field, field_validator
from torch import nn

from layers.language.base import (
    MAX_SIZE,
    Dim,
    LayerSpec,
    OptionalSize,
    Shape,
    ShapePreservingSpec,
    Size,
    TieWeight,
    expect_rank,
    infer_size,
)


class LinearSpec(LayerSpec):
    """Fully connected layer: y = x W^T + b over the last dimension."""

    category: ClassVar[str] = "linear"
    tieable_weight: ClassVar[str | None] = "weight"
    type: Literal["Linear"] = "Linear"
    in_features: OptionalSize = Field(None, description="size of each input sample; inferred")
    out_features: Size = Field(description="size of each output sample")
    bias: bool = True
    tie_weight: TieWeight = None

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(update={"in_features": infer_size(self.in_features, shape, -1, "in_features")})

    def build(self) -> nn.Module:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)

    def weight_tie(self) -> str | None:
        return self.tie_weight


class Bilinear(nn.Bilinear):
    """``nn.Bilinear`` applied to the input with itself: y = x^T A x + b."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, x)


class BilinearSpec(LayerSpec):
    """Bilinear form of the input with itself: y = x^T A x + b (both inputs are x)."""

    category: ClassVar[str] = "linear"
    type: Literal["Bilinear"] = "Bilinear"
    in1_features: OptionalSize = Field(None, description="size of the first input; inferred")
    in2_features: OptionalSize = Field(None, description="size of the second input; inferred")
    out_features: Size
    bias: bool = True

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(
            update={
                "in1_features": infer_size(self.in1_features, shape, -1, "in1_features"),
                "in2_features": infer_size(self.in2_features, shape, -1, "in2_features"),
            }
        )

    def build(self) -> nn.Module:
        return Bilinear(self.in1_features, self.in2_features, self.out_features, bias=self.bias)


class IdentitySpec(ShapePreservingSpec):
    """Returns its input unchanged."""

    category: ClassVar[str] = "shape"
    integer_input: ClassVar[bool] = True
    type: Literal["Identity"] = "Identity"

    def build(self) -> nn.Module:
        return nn.Identity()


class FlattenSpec(LayerSpec):
    """Flattens dimensions start_dim..end_dim into one."""

    category: ClassVar[str] = "shape"
    integer_input: ClassVar[bool] = True
    type: Literal["Flatten"] = "Flatten"
    start_dim: Dim = 1
    end_dim: Dim = -1

    def build(self) -> nn.Module:
        return nn.Flatten(self.start_dim, self.end_dim)


class UnflattenSpec(LayerSpec):
    """Expands dimension `dim` into the shape `unflattened_size`."""

    category: ClassVar[str] = "shape"
    integer_input: ClassVar[bool] = True
    type: Literal["Unflatten"] = "Unflatten"
    dim: Dim
    unflattened_size: list[Annotated[int, Field(ge=-1, le=MAX_SIZE)]] = Field(
        min_length=1, max_length=8, description="new sizes; one of them may be -1"
    )

    @field_validator("unflattened_size")
    @classmethod
    def _one_inferred_size(cls, sizes: list[int]) -> list[int]:
        # torch's own message for two is "unflatten got an unexpected error:."
        if sizes.count(-1) > 1:
            raise ValueError(f"at most one size may be -1 (inferred), got {sizes.count(-1)}: {sizes}")
        return sizes

    def build(self) -> nn.Module:
        return nn.Unflatten(self.dim, tuple(self.unflattened_size))


class EmbeddingSpec(LayerSpec):
    """Lookup table from integer ids to vectors (input dtype int64)."""

    category: ClassVar[str] = "embedding"
    integer_input: ClassVar[bool] = True
    tieable_weight: ClassVar[str | None] = "weight"
    type: Literal["Embedding"] = "Embedding"
    num_embeddings: Size = Field(description="vocabulary size")
    embedding_dim: Size
    padding_idx: int | None = None

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, range(1, 9), "Embedding")
        return self

    def build(self) -> nn.Module:
        return nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)
