"""Containers: layers made of layer sequences. Their children are any registered layer.

Each container declares, once, its sequences (``sequences``), its module around them
(``assemble``) and what its forward returns (``combine``); the build, the trace and the code
export follow these (``layers.language.walk``). A new container is one class here.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, TypeVar

import torch
from annotated_types import MinLen
from pydantic import Field
from torch import nn
from typing_extensions import TypeAliasType

from layers.language.base import ContainerSpec, Dim, Make, Slot, shape_str
from layers.language.errors import ShapeError

# Copies one Repeat may make (a 405B-parameter Llama has 126 layers); the layer limit bounds the total.
MAX_COPIES = 4096
T = TypeVar("T")

# Lists of any layer, containers included. ``AnyLayer``, the union of every registered type, is
# made in layers.language.model once all are registered, which then rebuilds these classes.
# Named aliases, so the OpenAPI document holds the union once (``#/components/schemas/AnyLayer``)
# and every list of layers is a ``$ref`` to ``Layers`` or ``Branch``. Swagger UI and ReDoc expand
# a recursive schema until a ``$ref`` repeats on the path; inlined, the ~70-way union was repeated
# in each of the 5 containers and the docs unfolded every chain of distinct containers (the page
# hung). ReDoc also drops the discriminated union's own ref from that path, so the cut has to come
# from the list: a container inside a container is shown once, then as "recursive".
Layers = TypeAliasType("Layers", Annotated[list["AnyLayer"], MinLen(1)])  # noqa: F821
Branch = TypeAliasType("Branch", list["AnyLayer"])  # noqa: F821  (may be empty: the input itself)


class Residual(nn.Module):
    """output = layers(x) + shortcut(x)."""

    def __init__(self, layers: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)


class Multiply(nn.Module):
    """Runs every branch on the input and multiplies the outputs element-wise (broadcasting)."""

    def __init__(self, branches: list[nn.Sequential]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out * branch(x)
        return out


class Concat(nn.Module):
    """Runs every branch on the input and concatenates the outputs along ``dim``."""

    def __init__(self, branches: list[nn.Sequential], dim: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def broadcast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """What ``a + b`` or ``a * b`` gives on meta tensors, without running it; None when the shapes
    do not broadcast as torch broadcasts."""
    if a.shape == b.shape and a.dtype == b.dtype:  # the common case, without torch's shape checks
        return a
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        return None
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a if (a.shape, a.dtype) == (shape, dtype) else torch.empty(shape, dtype=dtype, device="meta")


class SequentialSpec(ContainerSpec):
    """Runs its layers one after the other (nn.Sequential)."""

    type: Literal["Sequential"] = "Sequential"
    layers: Layers

    def sequences(self) -> list[Slot]:
        return [Slot(("layers",), "", self.layers)]

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        return sequences[0]

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        return outputs[0]


class ResidualSpec(ContainerSpec):
    """Adds a skip connection: layers(x) + shortcut(x), shortcut = identity when omitted."""

    type: Literal["Residual"] = "Residual"
    layers: Layers = Field(description="the body")
    shortcut: Layers | None = Field(
        None, description="layers on the skip path (e.g. a 1x1 conv); identity when omitted"
    )

    def sequences(self) -> list[Slot]:
        body = [Slot(("layers",), "layers", self.layers)]
        return [*body, Slot(("shortcut",), "shortcut", self.shortcut)] if self.shortcut else body

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        return make(Residual, sequences[0], sequences[1] if self.shortcut else make(nn.Identity))

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        body, skip = outputs[0], outputs[1] if self.shortcut else x
        out = broadcast(body, skip)
        if out is None:
            where = "shortcut output" if self.shortcut else "input (identity shortcut)"
            raise ShapeError(
                ("shortcut",) if self.shortcut else ("layers",),
                f"Residual adds its body output {shape_str(body.shape)} to its {where} "
                f"{shape_str(skip.shape)}: the shapes must be equal or broadcast as torch broadcasts"
                + ("" if self.shortcut else "; add a shortcut (e.g. a 1x1 Conv2d) to match them"),
                {"expected": list(skip.shape), "got": list(body.shape)},
            )
        return out


class ConcatSpec(ContainerSpec):
    """Runs parallel branches on the same input and concatenates their outputs along `dim`."""

    type: Literal["Concat"] = "Concat"
    branches: list[Branch] = Field(min_length=1, description="each branch is a list of layers")
    dim: Dim = Field(1, description="dimension to concatenate along (1: channels/features)")

    def sequences(self) -> list[Slot]:
        return [Slot(("branches", i), f"branches.{i}", branch) for i, branch in enumerate(self.branches)]

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        return make(Concat, sequences, self.dim)

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        first = outputs[0]
        rank = first.dim()
        if not -rank <= self.dim < rank:
            raise ShapeError(
                ("dim",),
                f"dim {self.dim} is out of range for the branch outputs of shape {shape_str(first.shape)} "
                f"(expected -{rank} to {rank - 1})",
                {"expected": [-rank, rank - 1], "got": self.dim},
            )
        dim = self.dim % rank

        def others(t: torch.Tensor) -> list[int]:
            return [size for d, size in enumerate(t.shape) if d != dim]

        for i, out in enumerate(outputs):
            if out.dim() != first.dim() or others(out) != others(first):
                raise ShapeError(
                    ("branches", i),
                    f"Concat along dim {self.dim} needs branch outputs equal in every other "
                    f"dimension: branch 0 gives {shape_str(first.shape)}, branch {i} gives "
                    f"{shape_str(out.shape)}",
                    {"expected": list(first.shape), "got": list(out.shape), "dim": self.dim},
                )
        return torch.cat(outputs, dim=self.dim)


class MultiplySpec(ContainerSpec):
    """Element-wise product of parallel branches (broadcast as torch does); an empty branch is the input."""

    type: Literal["Multiply"] = "Multiply"
    branches: list[Branch] = Field(
        min_length=1, description="each branch is a list of layers; [] passes the input through"
    )

    def sequences(self) -> list[Slot]:
        return [Slot(("branches", i), f"branches.{i}", branch) for i, branch in enumerate(self.branches)]

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        return make(Multiply, sequences)

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        out = outputs[0]
        for i, branch in enumerate(outputs[1:], start=1):
            product = broadcast(out, branch)
            if product is None:
                raise ShapeError(
                    ("branches", i),
                    f"Multiply cannot broadcast branch {i}'s output {shape_str(branch.shape)} with the "
                    f"product of the branches before it {shape_str(out.shape)}",
                    {"expected": list(out.shape), "got": list(branch.shape)},
                )
            out = product
        return out


class RepeatSpec(ContainerSpec):
    """`times` copies of a block, one after the other, each with its own parameters."""

    copies: ClassVar[bool] = True
    type: Literal["Repeat"] = "Repeat"
    times: int = Field(ge=1, le=MAX_COPIES, description="how many copies of the block")
    layers: Layers = Field(description="the block; it must keep its input's shape")

    def sequences(self) -> list[Slot]:
        return [Slot(("layers",), str(copy), self.layers) for copy in range(self.times)]

    def assemble(self, make: Make[T], sequences: list[T]) -> T:
        return make(nn.Sequential, *sequences)

    def combine(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        out = outputs[0]
        if (out.shape, out.dtype) != (x.shape, x.dtype):
            raise ShapeError(
                ("layers",),
                f"Repeat's block must keep its input's shape, so that each copy can take the "
                f"previous one's output: it takes {shape_str(x.shape)} and gives {shape_str(out.shape)}"
                + ("" if out.shape != x.shape else f" ({str(out.dtype).removeprefix('torch.')})"),
                {"expected": list(x.shape), "got": list(out.shape)},
            )
        return out
