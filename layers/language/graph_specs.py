"""Node types that exist only in the graph form: merges (several inputs) and splits (several
outputs). They have their own closed registry, ``GRAPH_SPECS``: a graph node whose ``type`` is
``Concat`` or ``Multiply`` and that names ``inputs`` is the merge, the container otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch
from torch import nn

from layers.language.base import LayerSpec, Shape, shape_str
from layers.language.errors import ShapeError
from layers.language.flops import FlopCounter

GRAPH_SPECS: dict[str, type[GraphOnlySpec]] = {}


class GraphOnlySpec(LayerSpec):
    """A node type of the graph form only: its module takes ``inputs`` (one tensor each) and returns
    one tensor or a tuple (one per output, referred to as ``name.0``, ``name.1``)."""

    registry: ClassVar[dict[str, Any]] = GRAPH_SPECS
    # Whether the node takes several tensors (``inputs``: a merge) or one (``input``: a split).
    several_inputs: ClassVar[bool] = True
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    def infer(self, shape: Shape) -> Self:
        what = "several inputs" if self.several_inputs else "one input and gives several outputs"
        raise ShapeError(
            ("type",),
            f"{self.type} takes {what}: it is a node of the graph form only "
            '({"inputs": {...}, "nodes": [...], "outputs": {...}}), not a layer of a sequence',
            {"got": self.type, "form": "graph"},
        )

    def check(self, inputs: list[torch.Tensor], refs: list[str]) -> None:
        """Raise ``ShapeError`` (loc ``("inputs", i)``) when the inputs do not combine."""

    def trace_values(
        self, module: nn.Module, inputs: list[torch.Tensor], refs: list[str], counter: FlopCounter
    ) -> tuple[Any, int]:
        """The module on meta tensors under ``counter``: its output (a tensor or a tuple) and its
        forward FLOPs."""
        self.check(inputs, refs)
        try:
            return counter.count(module, *inputs)
        except RuntimeError as e:
            shapes = ", ".join(f"'{r}' {shape_str(t.shape)}" for r, t in zip(refs, inputs, strict=True))
            reason = str(e).strip().splitlines()[0]
            raise ShapeError(
                ("inputs",) if self.several_inputs else ("input",),
                f"{self.type} cannot take its inputs {shapes}: {reason}",
                {"got": [list(t.shape) for t in inputs]},
            ) from e
