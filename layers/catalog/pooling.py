"""Pooling layers."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import nn

from layers.language.base import Size, SpatialSpec

Window = Size | list[Size]


def _t(value: int | list[int] | None) -> int | tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list) else value


class PoolSpec(SpatialSpec):
    """Fields shared by the windowed pools (not a registered type)."""

    category: ClassVar[str] = "pooling"
    per_dim_fields: ClassVar[tuple[str, ...]] = ("kernel_size", "stride", "padding")
    kernel_size: Window
    stride: Window | None = Field(None, description="defaults to kernel_size")
    padding: Annotated[int, Field(ge=0)] | list[Annotated[int, Field(ge=0)]] = 0
    ceil_mode: bool = Field(
        False,
        description="round the output size up: a last, partial window is kept if it starts inside the "
        "input or its left padding",
    )


class MaxPool1dSpec(PoolSpec):
    """1-D max pooling."""

    spatial_dims: ClassVar[int] = 1
    type: Literal["MaxPool1d"] = "MaxPool1d"

    def build(self) -> nn.Module:
        return nn.MaxPool1d(_t(self.kernel_size), _t(self.stride), _t(self.padding), ceil_mode=self.ceil_mode)


class MaxPool2dSpec(PoolSpec):
    """2-D max pooling."""

    type: Literal["MaxPool2d"] = "MaxPool2d"

    def build(self) -> nn.Module:
        return nn.MaxPool2d(_t(self.kernel_size), _t(self.stride), _t(self.padding), ceil_mode=self.ceil_mode)


class AvgPool1dSpec(PoolSpec):
    """1-D average pooling."""

    spatial_dims: ClassVar[int] = 1
    type: Literal["AvgPool1d"] = "AvgPool1d"

    def build(self) -> nn.Module:
        return nn.AvgPool1d(_t(self.kernel_size), _t(self.stride), _t(self.padding), ceil_mode=self.ceil_mode)


class AvgPool2dSpec(PoolSpec):
    """2-D average pooling."""

    type: Literal["AvgPool2d"] = "AvgPool2d"

    def build(self) -> nn.Module:
        return nn.AvgPool2d(_t(self.kernel_size), _t(self.stride), _t(self.padding), ceil_mode=self.ceil_mode)


class AdaptiveAvgPool1dSpec(SpatialSpec):
    """1-D average pooling to a fixed output length."""

    category: ClassVar[str] = "pooling"
    spatial_dims: ClassVar[int] = 1
    type: Literal["AdaptiveAvgPool1d"] = "AdaptiveAvgPool1d"
    output_size: Size

    def build(self) -> nn.Module:
        return nn.AdaptiveAvgPool1d(self.output_size)


class AdaptiveAvgPool2dSpec(SpatialSpec):
    """2-D average pooling to a fixed output size (e.g. 1 for global pooling)."""

    category: ClassVar[str] = "pooling"
    type: Literal["AdaptiveAvgPool2d"] = "AdaptiveAvgPool2d"
    per_dim_fields: ClassVar[tuple[str, ...]] = ("output_size",)
    output_size: Window

    def build(self) -> nn.Module:
        return nn.AdaptiveAvgPool2d(_t(self.output_size))


class AdaptiveMaxPool2dSpec(SpatialSpec):
    """2-D max pooling to a fixed output size."""

    category: ClassVar[str] = "pooling"
    type: Literal["AdaptiveMaxPool2d"] = "AdaptiveMaxPool2d"
    per_dim_fields: ClassVar[tuple[str, ...]] = ("output_size",)
    output_size: Window

    def build(self) -> nn.Module:
        return nn.AdaptiveMaxPool2d(_t(self.output_size))
