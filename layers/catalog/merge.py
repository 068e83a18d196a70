"""Merges: nodes of the graph form that combine several tensors into one (``inputs``).

``Add`` and ``Multiply`` broadcast as torch does, ``Concat`` joins along ``dim``, ``MatMul`` is
``torch.matmul`` of two. Each is a small module whose ``forward`` takes the tensors in order.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from layers.language.base import Dim, shape_str
from layers.language.errors import ShapeError
from layers.language.graph_specs import GraphOnlySpec


class AddInputs(nn.Module):
    """The sum of its inputs (broadcasting)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class MultiplyInputs(nn.Module):
    """The element-wise product of its inputs (broadcasting)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out


class ConcatInputs(nn.Module):
    """Its inputs concatenated along ``dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MatMul(nn.Module):
    """torch.matmul of its two inputs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class _Broadcasting(GraphOnlySpec):
    """An element-wise merge: each input must broadcast with the result of those before it."""

    verb: ClassVar[str] = "combine"

    def check(self, inputs: list[torch.Tensor], refs: list[str]) -> None:
        shape = inputs[0].shape
        for i in range(1, len(inputs)):
            try:
                shape = torch.broadcast_shapes(shape, inputs[i].shape)
            except RuntimeError:
                before = f"'{refs[0]}'" if i == 1 else f"the {self.verb} of {', '.join(refs[:i])}"
                raise ShapeError(
                    ("inputs", i),
                    f"{self.type} cannot broadcast '{refs[i]}' {shape_str(inputs[i].shape)} with "
                    f"{before} {shape_str(shape)}: the shapes must be equal or broadcast as torch broadcasts",
                    {"expected": list(shape), "got": list(inputs[i].shape)},
                ) from None


class AddSpec(_Broadcasting):
    """Element-wise sum of the `inputs`, broadcast as torch does (graph form only)."""

    category: ClassVar[str] = "merge"
    verb: ClassVar[str] = "sum"
    type: Literal["Add"] = "Add"

    def build(self) -> nn.Module:
        return AddInputs()


class MultiplyMergeSpec(_Broadcasting):
    """Element-wise product of the `inputs`, broadcast as torch does (graph form only)."""

    category: ClassVar[str] = "merge"
    verb: ClassVar[str] = "product"
    type: Literal["Multiply"] = "Multiply"

    def build(self) -> nn.Module:
        return MultiplyInputs()


class ConcatMergeSpec(GraphOnlySpec):
    """The `inputs` concatenated along `dim` (graph form only)."""

    category: ClassVar[str] = "merge"
    min_inputs: ClassVar[int] = 1
    type: Literal["Concat"] = "Concat"
    dim: Dim = Field(1, description="dimension to concatenate along (1: channels/features)")

    def check(self, inputs: list[torch.Tensor], refs: list[str]) -> None:
        first = inputs[0]
        rank = first.dim()
        if not -rank <= self.dim < rank:
            raise ShapeError(
                ("dim",),
                f"dim {self.dim} is out of range for '{refs[0]}' of shape {shape_str(first.shape)} "
                f"(expected -{rank} to {rank - 1})",
                {"expected": [-rank, rank - 1], "got": self.dim},
            )
        dim = self.dim % rank

        def others(t: torch.Tensor) -> list[int]:
            return [size for d, size in enumerate(t.shape) if d != dim]

        for i, x in enumerate(inputs[1:], start=1):
            if x.dim() != rank or others(x) != others(first):
                raise ShapeError(
                    ("inputs", i),
                    f"Concat along dim {self.dim} needs inputs equal in every other dimension: "
                    f"'{refs[0]}' is {shape_str(first.shape)}, '{refs[i]}' is {shape_str(x.shape)}",
                    {"expected": list(first.shape), "got": list(x.shape), "dim": self.dim},
                )

    def build(self) -> nn.Module:
        return ConcatInputs(self.dim)


class MatMulSpec(GraphOnlySpec):
    """torch.matmul of two `inputs` (e.g. attention scores q @ k^T; graph form only)."""

    category: ClassVar[str] = "merge"
    max_inputs: ClassVar[int | None] = 2
    type: Literal["MatMul"] = "MatMul"

    def build(self) -> nn.Module:
        return MatMul()
