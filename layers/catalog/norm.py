"""Normalisation layers. Feature counts are inferred from the input."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator
from torch import nn

from layers.language.base import (
    OptionalSize,
    Shape,
    ShapePreservingSpec,
    Size,
    expect_rank,
    infer_size,
    shape_str,
)
from layers.language.errors import ShapeError


class BatchNormSpec(ShapePreservingSpec):
    """Fields shared by the batch norms (not a registered type)."""

    category: ClassVar[str] = "normalization"
    ranks: ClassVar[tuple[int, ...]] = (4,)
    num_features: OptionalSize = Field(None, description="channels; inferred from dimension 1")
    eps: float = Field(1e-5, gt=0)
    momentum: float | None = Field(0.1, ge=0, le=1)
    affine: bool = True
    track_running_stats: bool = True

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, self.ranks, self.type)
        if math.prod(shape) == shape[1]:  # torch refuses this in training mode (the trace skips torch)
            raise ShapeError(
                (),
                f"expected more than 1 value per channel when training, got input size {shape_str(shape)}",
                {"expected": "batch x spatial size > 1", "got": list(shape)},
            )
        return self.model_copy(
            update={"num_features": infer_size(self.num_features, shape, 1, "num_features", "features")}
        )

    def norm_args(self) -> dict:
        return self.arguments()


class BatchNorm1dSpec(BatchNormSpec):
    """Batch normalisation over [B, C] or [B, C, L] inputs."""

    ranks: ClassVar[tuple[int, ...]] = (2, 3)
    type: Literal["BatchNorm1d"] = "BatchNorm1d"

    def build(self) -> nn.Module:
        return nn.BatchNorm1d(**self.norm_args())


class BatchNorm2dSpec(BatchNormSpec):
    """Batch normalisation over [B, C, H, W] inputs."""

    type: Literal["BatchNorm2d"] = "BatchNorm2d"

    def build(self) -> nn.Module:
        return nn.BatchNorm2d(**self.norm_args())


class TrailingNormSpec(ShapePreservingSpec):
    """Normalisation over the trailing dimensions, inferred as the last one (not a registered type)."""

    category: ClassVar[str] = "normalization"
    normalized_shape: list[Size] | None = Field(
        None, min_length=1, max_length=8, description="trailing dimensions; inferred as the last one"
    )

    def infer(self, shape: Shape) -> Self:
        if self.normalized_shape is None:
            return self.model_copy(
                update={"normalized_shape": [infer_size(None, shape, -1, "normalized_shape")]}
            )
        n = len(self.normalized_shape)
        for i, size in enumerate(self.normalized_shape):
            infer_size(size, shape, i - n, "normalized_shape")
        return self


class LayerNormSpec(TrailingNormSpec):
    """Layer normalisation over the trailing dimensions."""

    type: Literal["LayerNorm"] = "LayerNorm"
    eps: float = Field(1e-5, gt=0)
    elementwise_affine: bool = True
    bias: bool = True

    def build(self) -> nn.Module:
        return nn.LayerNorm(
            self.normalized_shape, eps=self.eps, elementwise_affine=self.elementwise_affine, bias=self.bias
        )


class RMSNormSpec(TrailingNormSpec):
    """Root-mean-square normalisation over the trailing dimensions (Llama): x / rms(x) * weight."""

    type: Literal["RMSNorm"] = "RMSNorm"
    eps: float | None = Field(None, gt=0, description="added to the mean square; default: the dtype's eps")
    elementwise_affine: bool = True

    def build(self) -> nn.Module:
        return nn.RMSNorm(self.normalized_shape, eps=self.eps, elementwise_affine=self.elementwise_affine)


class GroupNormSpec(ShapePreservingSpec):
    """Group normalisation: channels split into num_groups groups."""

    category: ClassVar[str] = "normalization"
    type: Literal["GroupNorm"] = "GroupNorm"
    num_groups: Size
    num_channels: OptionalSize = Field(None, description="channels; inferred from dimension 1")
    eps: float = Field(1e-5, gt=0)
    affine: bool = True

    @model_validator(mode="after")
    def _groups_divide_channels(self) -> Self:
        if self.num_channels is not None and self.num_channels % self.num_groups:
            raise ValueError(
                f"num_channels ({self.num_channels}) must be divisible by num_groups ({self.num_groups})"
            )
        return self

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, range(2, 9), self.type)
        channels = infer_size(self.num_channels, shape, 1, "num_channels", "channels")
        if channels % self.num_groups:
            raise ShapeError(
                ("num_groups",),
                f"expected channels divisible by num_groups {self.num_groups}, got {channels} channels",
                {"expected_divisor": self.num_groups, "got": channels},
            )
        # torch's training-mode check: each group needs more than one value (the trace skips torch)
        if shape[0] * (channels // self.num_groups) * math.prod(shape[2:]) == 1:
            raise ShapeError(
                (),
                f"expected more than 1 value per group when training, got input size {shape_str(shape)} "
                f"with {self.num_groups} groups",
                {"expected": "batch x channels per group x spatial size > 1", "got": list(shape)},
            )
        return self.model_copy(update={"num_channels": channels})

    def build(self) -> nn.Module:
        return nn.GroupNorm(self.num_groups, self.num_channels, eps=self.eps, affine=self.affine)


class InstanceNormSpec(ShapePreservingSpec):
    """Fields shared by the instance norms (not a registered type)."""

    category: ClassVar[str] = "normalization"
    spatial_dims: ClassVar[int]
    num_features: OptionalSize = Field(None, description="channels; inferred from the input")
    eps: float = Field(1e-5, gt=0)
    momentum: float | None = Field(0.1, ge=0, le=1)
    affine: bool = False
    track_running_stats: bool = False

    def infer(self, shape: Shape) -> Self:
        n = self.spatial_dims
        expect_rank(shape, (n + 1, n + 2), self.type)
        if math.prod(shape[-n:]) == 1:  # torch refuses this in training mode (the trace skips torch)
            raise ShapeError(
                (),
                f"expected more than 1 spatial element when training, got input size {shape_str(shape)}",
                {"expected": "spatial size > 1", "got": list(shape)},
            )
        channels = infer_size(self.num_features, shape, -(n + 1), "num_features", "channels")
        return self.model_copy(update={"num_features": channels})

    def norm_args(self) -> dict:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }


class InstanceNorm1dSpec(InstanceNormSpec):
    """Instance normalisation: each sample's channel normalised over L ([B, C, L] or [C, L])."""

    spatial_dims: ClassVar[int] = 1
    type: Literal["InstanceNorm1d"] = "InstanceNorm1d"

    def build(self) -> nn.Module:
        return nn.InstanceNorm1d(**self.norm_args())


class InstanceNorm2dSpec(InstanceNormSpec):
    """Instance normalisation: each sample's channel normalised over H x W ([B, C, H, W] or [C, H, W])."""

    spatial_dims: ClassVar[int] = 2
    type: Literal["InstanceNorm2d"] = "InstanceNorm2d"

    def build(self) -> nn.Module:
        return nn.InstanceNorm2d(**self.norm_args())
