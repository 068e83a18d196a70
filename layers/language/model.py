"""The model spec: ``{"layers": [...]}``, and the discriminated union of every layer type.

The union is generated from the registry, so adding a layer is one spec class plus one
import line in ``layers/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from torch import nn
from typing_extensions import TypeAliasType

from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.language.build import Builder
from layers.language.containers import Layers
from layers.language.errors import LimitError, Loc
from layers.language.graph_specs import GRAPH_SPECS
from layers.language.spec import union_of
from layers.language.walk import nodes


def _not_graph_only(data: Any) -> Any:
    """A node type of the graph form only (a merge, a split) is refused in a sequence, saying so."""
    tag = data.get("type") if isinstance(data, dict) else None
    if isinstance(tag, str) and tag in GRAPH_SPECS and tag not in LAYER_SPECS:
        spec = GRAPH_SPECS[tag]
        what = "several inputs (`inputs`)" if spec.several_inputs else "several outputs (`name.0`, `name.1`)"
        raise PydanticCustomError(
            "graph_only",
            "{tag} has " + what + ": it is a node of the graph form only (a model with `inputs`, "
            "`nodes` and `outputs`), not a layer of a sequence",
            {"tag": tag, "form": "graph"},
        )
    return data


# The union of every registered type (the containers are registered by the import above).
AnyLayer = TypeAliasType("AnyLayer", Annotated[union_of(LAYER_SPECS), BeforeValidator(_not_graph_only)])

for _spec in LAYER_SPECS.values():  # containers hold AnyLayer, defined only now
    if issubclass(_spec, ContainerSpec):
        _spec.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})


class ModelSpec(BaseModel):
    """A model: its layers, run in sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: Layers = Field(description="the layers, applied in order")

    def walk(self) -> Iterator[tuple[Loc, int, LayerSpec]]:
        """Every layer node as ``(loc, depth, spec)``, in forward (pre-)order (``walk.nodes``).

        Each copy a ``Repeat`` makes is walked (at the same locs), lazily: a limit is hit after
        as many steps as layers allowed, however many copies the spec asks for.
        """
        return ((node.loc, node.depth, node.spec) for node in nodes(self.layers))

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
        return Builder().model(self.layers)[0]


ModelSpec.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})
