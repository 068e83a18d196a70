"""Convolutions. Channels are inferred from dimension 1 of a batched input."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator
from torch import nn

from layers.language.base import MAX_SIZE, OptionalSize, Shape, Size, SpatialSpec, expect_rank, infer_size

KernelArg = Size | list[Size]
Padding = Annotated[int, Field(ge=0, le=MAX_SIZE)]
PaddingArg = Padding | list[Padding] | Literal["valid", "same"]


class ConvSpec(SpatialSpec):
    """Fields and shape inference shared by the convolutions (not a registered type)."""

    category: ClassVar[str] = "conv"
    per_dim_fields: ClassVar[tuple[str, ...]] = (
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "output_padding",
    )
    in_channels: OptionalSize = Field(None, description="input channels; inferred from the input")
    out_channels: Size
    kernel_size: KernelArg
    stride: KernelArg = 1
    padding: PaddingArg = 0
    dilation: KernelArg = 1
    groups: Size = 1
    bias: bool = True

    def infer(self, shape: Shape) -> Self:
        n = self.spatial_dims
        expect_rank(shape, (n + 1, n + 2), self.type)
        channels = infer_size(self.in_channels, shape, -(n + 1), "in_channels", "channels")
        return self.model_copy(update={"in_channels": channels})

    def conv_args(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _tuple(self.kernel_size),
            "stride": _tuple(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else _tuple(self.padding),
            "dilation": _tuple(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
        }


def _tuple(value: int | list[int]) -> int | tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else value


class Conv1dSpec(ConvSpec):
    """1-D convolution over [B, C, L] inputs."""

    spatial_dims: ClassVar[int] = 1
    type: Literal["Conv1d"] = "Conv1d"

    def build(self) -> nn.Module:
        return nn.Conv1d(**self.conv_args())


class Conv2dSpec(ConvSpec):
    """2-D convolution over [B, C, H, W] inputs."""

    type: Literal["Conv2d"] = "Conv2d"

    def build(self) -> nn.Module:
        return nn.Conv2d(**self.conv_args())


class Conv3dSpec(ConvSpec):
    """3-D convolution over [B, C, D, H, W] inputs (video, volumes)."""

    spatial_dims: ClassVar[int] = 3
    type: Literal["Conv3d"] = "Conv3d"

    def build(self) -> nn.Module:
        return nn.Conv3d(**self.conv_args())


class ConvTransposeSpec(ConvSpec):
    """Fields shared by the transposed convolutions (not a registered type)."""

    padding: Padding | list[Padding] = 0
    output_padding: Padding | list[Padding] = 0

    @model_validator(mode="after")
    def _output_padding_below_stride_or_dilation(self) -> Self:
        # torch checks this only in forward, which meta skips
        def per_dim(value: int | list[int]) -> list[int]:
            return value if isinstance(value, list) else [value] * self.spatial_dims

        for out_pad, stride, dilation in zip(
            per_dim(self.output_padding), per_dim(self.stride), per_dim(self.dilation), strict=True
        ):
            if out_pad >= max(stride, dilation):
                raise ValueError(
                    f"output_padding ({out_pad}) must be smaller than stride ({stride}) "
                    f"or dilation ({dilation})"
                )
        return self

    def transpose_args(self) -> dict:
        return {**self.conv_args(), "output_padding": _tuple(self.output_padding)}


class ConvTranspose1dSpec(ConvTransposeSpec):
    """1-D transposed convolution (learned upsampling) over [B, C, L] inputs."""

    spatial_dims: ClassVar[int] = 1
    type: Literal["ConvTranspose1d"] = "ConvTranspose1d"

    def build(self) -> nn.Module:
        return nn.ConvTranspose1d(**self.transpose_args())


class ConvTranspose2dSpec(ConvTransposeSpec):
    """2-D transposed convolution (learned upsampling) over [B, C, H, W] inputs."""

    type: Literal["ConvTranspose2d"] = "ConvTranspose2d"

    def build(self) -> nn.Module:
        return nn.ConvTranspose2d(**self.transpose_args())
