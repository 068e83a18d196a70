"""Splits: nodes of the graph form that cut one tensor into several outputs, referred to as
``name.0``, ``name.1``... (``torch.split`` and ``torch.chunk``)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from layers.language.base import Dim, Size, expect_dim
from layers.language.graph_specs import GraphOnlySpec


class Split(nn.Module):
    """torch.split(x, split_size_or_sections, dim): pieces of that size (the last may be smaller),
    or of the listed sizes."""

    def __init__(self, split_size_or_sections: int | list[int], dim: int = 0) -> None:
        super().__init__()
        self.split_size_or_sections = split_size_or_sections
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.split_size_or_sections, self.dim)

    def extra_repr(self) -> str:
        return f"split_size_or_sections={self.split_size_or_sections}, dim={self.dim}"


class Chunk(nn.Module):
    """torch.chunk(x, chunks, dim): at most ``chunks`` pieces of equal size (the last may be smaller)."""

    def __init__(self, chunks: int, dim: int = 0) -> None:
        super().__init__()
        self.chunks = chunks
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.chunk(x, self.chunks, self.dim)

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}, dim={self.dim}"


class _SplitSpec(GraphOnlySpec):
    several_inputs: ClassVar[bool] = False
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1

    dim: Dim = Field(-1, description="the dimension to cut")

    def check(self, inputs: list[torch.Tensor], refs: list[str]) -> None:
        expect_dim(tuple(inputs[0].shape), self.dim)


class SplitSpec(_SplitSpec):
    """Cuts the input along `dim` into pieces of `split_size_or_sections` (one size, or a list of
    sizes summing to the dimension); each piece is an output, `name.0`, `name.1`... (graph form only)."""

    category: ClassVar[str] = "split"
    type: Literal["Split"] = "Split"
    split_size_or_sections: Size | Annotated[list[Size], Field(min_length=1, max_length=1024)] = Field(
        description="the size of each piece, or the list of their sizes"
    )

    def build(self) -> nn.Module:
        return Split(self.split_size_or_sections, self.dim)


class ChunkSpec(_SplitSpec):
    """Cuts the input along `dim` into `chunks` pieces of equal size (torch.chunk: the last may be
    smaller, and there may be fewer); each is an output, `name.0`, `name.1`... (graph form only)."""

    category: ClassVar[str] = "split"
    type: Literal["Chunk"] = "Chunk"
    chunks: int = Field(ge=1, le=1024, description="how many pieces")

    def build(self) -> nn.Module:
        return Chunk(self.chunks, self.dim)
