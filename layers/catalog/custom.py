"""The custom layers Model Builder grew from: MyLinear, MyConv2d, and ConvBlock."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.catalog.activation import ACTIVATIONS, ActivationName
from layers.language.base import LayerSpec, OptionalSize, Shape, Size, TieWeight, expect_rank, infer_size


class MyLinear(nn.Module):
    """A linear layer wrapped in a module of our own; weight is [out_features, in_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MyConv2d(nn.Module):
    """A 2-D convolution wrapped in a module of our own; no bias unless asked for."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(nn.Module):
    """Conv2d, then optional BatchNorm2d, then an activation; the conv has no bias under BN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        batch_norm: bool = True,
        activation: ActivationName = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))  # (B, out_channels, H', W')


class MyLinearSpec(LayerSpec):
    """The tutorial's custom linear layer (wraps nn.Linear as `linear`)."""

    category: ClassVar[str] = "custom"
    tieable_weight: ClassVar[str | None] = "linear.weight"
    type: Literal["MyLinear"] = "MyLinear"
    in_features: OptionalSize = Field(None, description="size of each input sample; inferred")
    out_features: Size
    bias: bool = True
    tie_weight: TieWeight = None

    def infer(self, shape: Shape) -> Self:
        return self.model_copy(update={"in_features": infer_size(self.in_features, shape, -1, "in_features")})

    def build(self) -> nn.Module:
        return MyLinear(self.in_features, self.out_features, bias=self.bias)

    def weight_tie(self) -> str | None:
        return self.tie_weight


class _Conv2dInput(LayerSpec):
    """Channel inference shared by the custom 2-D conv layers (not a registered type)."""

    category: ClassVar[str] = "custom"
    in_channels: OptionalSize = Field(None, description="input channels; inferred from the input")

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (3, 4), self.type)
        channels = infer_size(self.in_channels, shape, -3, "in_channels", "channels")
        return self.model_copy(update={"in_channels": channels})


class MyConv2dSpec(_Conv2dInput):
    """The tutorial's custom convolution (wraps nn.Conv2d as `conv`, bias off by default)."""

    type: Literal["MyConv2d"] = "MyConv2d"
    out_channels: Size
    kernel_size: Size
    stride: Size = 1
    padding: int = Field(0, ge=0, le=1 << 16)
    dilation: Size = 1
    groups: Size = 1
    bias: bool = False

    def build(self) -> nn.Module:
        return MyConv2d(**self.arguments())


class ConvBlockSpec(_Conv2dInput):
    """Conv2d + optional BatchNorm2d + a chosen activation, as one block."""

    type: Literal["ConvBlock"] = "ConvBlock"
    out_channels: Size
    kernel_size: Size = 3
    stride: Size = 1
    padding: int = Field(1, ge=0, le=1 << 16)
    batch_norm: bool = True
    activation: ActivationName = "relu"

    def build(self) -> nn.Module:
        return ConvBlock(**self.arguments())
