"""Tensor plumbing: reorder, pick, cut and average dimensions. Torch has these as tensor methods,
not modules, so each is a small module of our own that a spec can name."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.language.base import MAX_SIZE, Dim, LayerSpec, Shape, expect_dim, shape_str
from layers.language.errors import ShapeError

Index = Annotated[int, Field(ge=-MAX_SIZE, le=MAX_SIZE)]


class Permute(nn.Module):
    """x.permute(dims): dimension i of the output is dimension dims[i] of the input."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Transpose(nn.Module):
    """x.transpose(dim0, dim1): swaps two dimensions (e.g. [B, C, L] -> [B, L, C])."""

    def __init__(self, dim0: int, dim1: int) -> None:
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)

    def extra_repr(self) -> str:
        return f"dim0={self.dim0}, dim1={self.dim1}"


class Select(nn.Module):
    """x.select(dim, index): one slice, that dimension dropped (``x[:, 0]`` is dim=1, index=0)."""

    def __init__(self, dim: int, index: int) -> None:
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.dim, self.index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, index={self.index}"


class Slice(nn.Module):
    """x[..., start:end:step, ...] along ``dim``; the dimension is kept."""

    def __init__(self, dim: int, start: int | None = None, end: int | None = None, step: int = 1) -> None:
        super().__init__()
        self.dim, self.start, self.end, self.step = dim, start, end, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = (slice(None),) * (self.dim % x.dim())
        return x[(*before, slice(self.start, self.end, self.step))]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, start={self.start}, end={self.end}, step={self.step}"


class Mean(nn.Module):
    """x.mean(dim, keepdim): the average over one or more dimensions."""

    def __init__(self, dim: int | list[int], keepdim: bool = False) -> None:
        super().__init__()
        self.dim = tuple(dim) if isinstance(dim, list) else dim
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(self.dim, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, keepdim={self.keepdim}"


class PlumbingSpec(LayerSpec):
    """Category shared by the plumbing layers (not a registered type)."""

    category: ClassVar[str] = "shape"
    integer_input: ClassVar[bool] = True  # they move values without computing on them


class PermuteSpec(PlumbingSpec):
    """Reorders the dimensions: x.permute(dims) (e.g. [B, H, W, C] -> [B, C, H, W] is [0, 3, 1, 2])."""

    type: Literal["Permute"] = "Permute"
    dims: list[Dim] = Field(min_length=1, max_length=8, description="a permutation of the input's dimensions")

    def infer(self, shape: Shape) -> Self:
        rank = len(shape)
        if len(self.dims) != rank or sorted(d % rank for d in self.dims if -rank <= d < rank) != list(
            range(rank)
        ):
            raise ShapeError(
                ("dims",),
                f"expected a permutation of the {rank} dimensions of input {shape_str(shape)} "
                f"(each of 0..{rank - 1} once, or its negative), got {self.dims}",
                {"expected_rank": rank, "got": list(self.dims)},
            )
        return self

    def build(self) -> nn.Module:
        return Permute(self.dims)


class TransposeSpec(PlumbingSpec):
    """Swaps two dimensions: x.transpose(dim0, dim1) (e.g. conv features [B, C, L] -> tokens [B, L, C])."""

    type: Literal["Transpose"] = "Transpose"
    dim0: Dim
    dim1: Dim

    def infer(self, shape: Shape) -> Self:
        expect_dim(shape, self.dim0, "dim0")
        expect_dim(shape, self.dim1, "dim1")
        return self

    def build(self) -> nn.Module:
        return Transpose(self.dim0, self.dim1)


class SelectSpec(PlumbingSpec):
    """Picks index `index` of dimension `dim` and drops that dimension: x.select(dim, index)."""

    type: Literal["Select"] = "Select"
    dim: Dim
    index: Index = Field(description="position along dim; negative counts from the end")

    def infer(self, shape: Shape) -> Self:
        expect_dim(shape, self.dim)
        size = shape[self.dim]
        if not -size <= self.index < size:
            raise ShapeError(
                ("index",),
                f"index {self.index} is out of range for dimension {self.dim} of size {size} "
                f"(input shape {shape_str(shape)}; expected -{size} to {size - 1})",
                {"expected": [-size, size - 1], "got": self.index},
            )
        return self

    def build(self) -> nn.Module:
        return Select(self.dim, self.index)


class SliceSpec(PlumbingSpec):
    """Keeps positions start:end:step of dimension `dim` (Python slicing; the dimension stays)."""

    type: Literal["Slice"] = "Slice"
    dim: Dim
    start: Index | None = Field(None, description="first position kept (default 0); negative from the end")
    end: Index | None = Field(None, description="position to stop before (default: the end)")
    step: Annotated[int, Field(gt=0, le=MAX_SIZE)] = 1

    def infer(self, shape: Shape) -> Self:
        expect_dim(shape, self.dim)
        size = shape[self.dim]
        if not range(size)[slice(self.start, self.end, self.step)]:
            raise ShapeError(
                ("start",),
                f"slice {self.start}:{self.end}:{self.step} of dimension {self.dim} (size {size}, "
                f"input shape {shape_str(shape)}) keeps nothing",
                {"size": size, "got": [self.start, self.end, self.step]},
            )
        return self

    def build(self) -> nn.Module:
        return Slice(self.dim, self.start, self.end, self.step)


class MeanSpec(LayerSpec):
    """Averages over dimension(s) `dim`: x.mean(dim, keepdim) (e.g. mean pooling over tokens)."""

    category: ClassVar[str] = "shape"
    type: Literal["Mean"] = "Mean"
    dim: Dim | Annotated[list[Dim], Field(min_length=1, max_length=8)] = Field(
        description="dimension, or dimensions, to average over"
    )
    keepdim: bool = Field(False, description="keep the averaged dimensions as size 1")

    def infer(self, shape: Shape) -> Self:
        dims = self.dim if isinstance(self.dim, list) else [self.dim]
        for d in dims:
            expect_dim(shape, d, "dim")
        if len({d % len(shape) for d in dims}) != len(dims):
            raise ShapeError(("dim",), f"dim {self.dim} names a dimension twice", {"got": dims})
        return self

    def build(self) -> nn.Module:
        return Mean(self.dim, self.keepdim)
