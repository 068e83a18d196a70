"""Convolutions. Channels are inferred from dimension 1 of a batched input."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field
from torch import nn

from layers.base import LayerSpec, OptionalSize, Shape, Size, expect_rank, infer_size

KernelArg = Size | list[Size]
PaddingArg = int | list[int] | Literal["valid", "same"]


class ConvSpec(LayerSpec):
    """Fields and shape inference shared by the convolutions (not a registered type)."""

    category: ClassVar[str] = "conv"
    spatial_dims: ClassVar[int] = 2
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


class ConvTranspose2dSpec(ConvSpec):
    """2-D transposed convolution (learned upsampling) over [B, C, H, W] inputs."""

    type: Literal["ConvTranspose2d"] = "ConvTranspose2d"
    padding: int | list[int] = 0
    output_padding: int | list[int] = 0

    def build(self) -> nn.Module:
        args = self.conv_args()
        return nn.ConvTranspose2d(**args, output_padding=_tuple(self.output_padding))
