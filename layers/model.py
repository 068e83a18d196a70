"""The model spec: ``{"layers": [...]}``, and the discriminated union of every layer type.

The union is generated from the registry, so adding a layer is one spec class plus one
import line in ``layers/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from layers import containers
from layers.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.errors import LimitError, Loc
from layers.spec import union_of

AnyLayer = union_of(LAYER_SPECS)

for _container in (containers.SequentialSpec, containers.ResidualSpec, containers.ConcatSpec):
    _container.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})


class ModelSpec(BaseModel):
    """A model: its layers, run in sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[AnyLayer] = Field(min_length=1, description="the layers, applied in order")

    def walk(self) -> Iterator[tuple[Loc, int, LayerSpec]]:
        """Every layer node as ``(loc, depth, spec)``, in forward (pre-)order, without recursion."""
        stack: list[tuple[Loc, int, LayerSpec]] = [
            (("layers", i), 0, spec) for i, spec in reversed(list(enumerate(self.layers)))
        ]
        while stack:
            loc, depth, spec = stack.pop()
            yield loc, depth, spec
            if isinstance(spec, ContainerSpec):
                children = [
                    ((*loc, *sub, i), depth + 1, child)
                    for sub, _, specs in spec.sequences()
                    for i, child in enumerate(specs)
                ]
                stack.extend(reversed(children))

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
        """Construct the model from a fully inferred spec (see ``layers.trace``) on the current device."""
        return nn.Sequential(*(build_layer(spec) for spec in self.layers))


def build_layer(spec: LayerSpec) -> nn.Module:
    """Construct one inferred layer, containers included."""
    if isinstance(spec, ContainerSpec):
        return spec.assemble(
            [nn.Sequential(*(build_layer(child) for child in specs)) for _, _, specs in spec.sequences()]
        )
    return spec.build()
