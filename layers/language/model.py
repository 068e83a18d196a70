"""The model spec: ``{"layers": [...]}``, and the discriminated union of every layer type.

The union is generated from the registry, so adding a layer is one spec class plus one
import line in ``layers/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from annotated_types import MinLen
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from typing_extensions import TypeAliasType

from layers.language import containers  # noqa: F401  (registers the containers before the union)
from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.language.build import Builder
from layers.language.errors import LimitError, Loc
from layers.language.spec import union_of

# Named aliases, so the OpenAPI document holds the union once (``#/components/schemas/AnyLayer``)
# and every list of layers is a ``$ref`` to ``Layers`` or ``Branch``. Swagger UI and ReDoc expand
# a recursive schema until a ``$ref`` repeats on the path; inlined, the ~70-way union was repeated
# in each of the 5 containers and the docs unfolded every chain of distinct containers (the page
# hung). ReDoc also drops the discriminated union's own ref from that path, so the cut has to come
# from the list: a container inside a container is shown once, then as "recursive".
AnyLayer = TypeAliasType("AnyLayer", union_of(LAYER_SPECS))
Layers = TypeAliasType("Layers", Annotated[list[AnyLayer], MinLen(1)])
Branch = TypeAliasType("Branch", list[AnyLayer])  # may be empty: the input itself (Multiply)

for _spec in LAYER_SPECS.values():  # containers hold AnyLayer, defined only now
    if issubclass(_spec, ContainerSpec):
        _spec.model_rebuild(_types_namespace={"AnyLayer": AnyLayer, "Layers": Layers, "Branch": Branch})


def _children(loc: Loc, depth: int, spec: ContainerSpec) -> Iterator[tuple[Loc, int, LayerSpec]]:
    for sub, _, specs in spec.sequences():
        for i, child in enumerate(specs):
            yield (*loc, *sub, i), depth + 1, child


class ModelSpec(BaseModel):
    """A model: its layers, run in sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: Layers = Field(description="the layers, applied in order")

    def walk(self) -> Iterator[tuple[Loc, int, LayerSpec]]:
        """Every layer node as ``(loc, depth, spec)``, in forward (pre-)order, without recursion.

        Each copy a ``Repeat`` makes is walked (at the same locs), lazily: a limit is hit after
        as many steps as layers allowed, however many copies the spec asks for.
        """
        stack: list[Iterator[tuple[Loc, int, LayerSpec]]] = [
            ((("layers", i), 0, spec) for i, spec in enumerate(self.layers))
        ]
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
                continue
            yield node
            loc, depth, spec = node
            if isinstance(spec, ContainerSpec):
                stack.append(_children(loc, depth, spec))

    def check_limits(self, max_layers: int, max_depth: int) -> None:
        """Raise ``LimitError`` at the first layer beyond ``max_layers`` or nested past ``max_depth``."""
        for count, (loc, depth, _) in enumerate(self.walk(), start=1):
            if depth > max_depth:
                raise LimitError(
                    loc,
                    f"containers are nested {depth} deep here; the limit is {max_depth}",
                    {"limit": max_depth, "got": depth},
                )
            if count > max_layers:
                raise LimitError(
                    loc,
                    f"the model has more than {max_layers} layers (containers and their children "
                    "counted); this is the first one past the limit",
                    {"limit": max_layers},
                )

    def build(self) -> nn.Sequential:
        """Construct the model from a fully inferred spec (see ``layers.analysis.trace``) on the current
        device: the same walk as the trace, so names and weight ties resolve the same way."""
        return Builder().sequence(self.layers, ("layers",), "")
