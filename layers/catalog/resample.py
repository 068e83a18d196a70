"""Resampling without learned weights: interpolation, zero padding and pixel shuffling."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from layers.language.base import MAX_SIZE, LayerSpec, Shape, Size, expect_rank, shape_str
from layers.language.errors import ShapeError

Scale = Annotated[float, Field(gt=0, le=1024)]
Padding = Annotated[int, Field(ge=0, le=MAX_SIZE)]
UpsampleMode = Literal["nearest", "linear", "bilinear", "bicubic"]
# The input ranks each mode takes: [B, C, L], [B, C, H, W] or [B, C, D, H, W].
MODE_RANKS: dict[str, tuple[int, ...]] = {
    "nearest": (3, 4, 5),
    "linear": (3,),
    "bilinear": (4,),
    "bicubic": (4,),
}


def _t(value: int | float | list | None) -> int | float | tuple | None:
    return tuple(value) if isinstance(value, list) else value


class UpsampleSpec(LayerSpec):
    """Resizes [B, C, ...] to `size` or by `scale_factor` (exactly one), interpolating with `mode`."""

    category: ClassVar[str] = "resampling"
    type: Literal["Upsample"] = "Upsample"
    size: Size | Annotated[list[Size], Field(min_length=1, max_length=3)] | None = Field(
        None, description="output spatial size (one per spatial dimension, or one for all)"
    )
    scale_factor: Scale | Annotated[list[Scale], Field(min_length=1, max_length=3)] | None = Field(
        None, validate_default=True, description="multiplier of the spatial size (or one per dimension)"
    )
    mode: UpsampleMode = Field(
        "nearest", description="nearest: 3-5-D input; linear: 3-D; bilinear, bicubic: 4-D"
    )
    align_corners: bool | None = Field(None, description="linear, bilinear and bicubic only")

    @field_validator("scale_factor")
    @classmethod
    def _size_or_scale(
        cls, scale: float | list[float] | None, info: ValidationInfo
    ) -> float | list[float] | None:
        if "size" in info.data and (info.data["size"] is None) == (scale is None):
            given = "both" if scale is not None else "neither"
            raise ValueError(f"set exactly one of size and scale_factor ({given} given)")
        return scale

    @field_validator("align_corners")
    @classmethod
    def _align_corners_interpolates(cls, align: bool | None, info: ValidationInfo) -> bool | None:
        if align is not None and info.data.get("mode") == "nearest":
            raise ValueError("align_corners applies to linear, bilinear and bicubic modes only; leave it out")
        return align

    def infer(self, shape: Shape) -> Self:
        ranks = MODE_RANKS[self.mode]
        if len(shape) not in ranks:
            fits = [mode for mode, accepted in MODE_RANKS.items() if len(shape) in accepted]
            raise ShapeError(
                ("mode",),
                f"mode {self.mode} takes a {' or '.join(map(str, ranks))}-D input [B, C, ...], got shape "
                f"{shape_str(shape)}" + (f"; this input takes mode {' or '.join(fits)}" if fits else ""),
                {"expected_rank": list(ranks), "got": list(shape)},
            )
        spatial = shape[2:]
        field = "size" if self.size is not None else "scale_factor"
        value = self.size if self.size is not None else self.scale_factor
        per_dim = value if isinstance(value, list) else [value] * len(spatial)
        if len(per_dim) != len(spatial):
            raise ShapeError(
                (field,),
                f"expected one {field} or {len(spatial)} (one per spatial dimension of {shape_str(shape)}), "
                f"got {len(per_dim)}",
                {"expected": len(spatial), "got": len(per_dim)},
            )
        if self.scale_factor is not None and any(
            math.floor(n * s) < 1 for n, s in zip(spatial, per_dim, strict=True)
        ):
            raise ShapeError(
                ("scale_factor",),
                f"scale_factor {self.scale_factor} shrinks the spatial size {list(spatial)} to nothing",
                {"got": self.scale_factor, "spatial_size": list(spatial)},
            )
        return self

    def build(self) -> nn.Module:
        return nn.Upsample(
            size=_t(self.size),
            scale_factor=_t(self.scale_factor),
            mode=self.mode,
            align_corners=self.align_corners,
        )


class ZeroPad2dSpec(LayerSpec):
    """Pads the last two dimensions with zeros: one size for all sides, or [left, right, top, bottom]."""

    category: ClassVar[str] = "resampling"
    integer_input: ClassVar[bool] = True  # moves values only
    type: Literal["ZeroPad2d"] = "ZeroPad2d"
    padding: Padding | Annotated[list[Padding], Field(min_length=4, max_length=4)]

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (3, 4), self.type)
        return self

    def build(self) -> nn.Module:
        return nn.ZeroPad2d(_t(self.padding))


class PixelShuffleSpec(LayerSpec):
    """Rearranges [B, C * r^2, H, W] into [B, C, H * r, W * r] (sub-pixel upsampling), r = upscale_factor."""

    category: ClassVar[str] = "resampling"
    integer_input: ClassVar[bool] = True  # moves values only
    type: Literal["PixelShuffle"] = "PixelShuffle"
    upscale_factor: Annotated[int, Field(gt=0, le=1024)]

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, range(3, 9), self.type)
        channels, square = shape[-3], self.upscale_factor**2
        if channels % square:
            raise ShapeError(
                ("upscale_factor",),
                f"expected channels (dimension -3 of {shape_str(shape)}) divisible by upscale_factor^2 = "
                f"{square}, got {channels}",
                {"expected_divisor": square, "got": channels},
            )
        return self

    def build(self) -> nn.Module:
        return nn.PixelShuffle(self.upscale_factor)
