"""The layer catalogue and the JSON spec language. No web code lives here.

- ``layers.language``: the spec language (base classes and registry, fields, errors, the model
  spec, containers, the walk).
- ``layers.catalog``: the layer types; importing a module there registers its spec classes, and
  the order below is the catalog's order.
- ``layers.analysis``: what is read from a model on the meta device (trace, summary, memory, fit).
- ``layers.export``: a model as Python code or ONNX.
- ``layers.training``: losses and optimizers.
"""

# The catalog's order: the containers come after the attention layers.
# isort: off
from layers.catalog import activation, attention, causal_attention  # noqa: F401  (registers them)
from layers.language import containers  # noqa: F401
from layers.catalog import (  # noqa: F401
    conv,
    custom,
    dropout,
    linear,
    norm,
    plumbing,
    pooling,
    positions,
    recurrent,
    resample,
    scale,
    swiglu,
)
from layers.catalog import merge, split  # noqa: F401  (the graph form's own node types)

# isort: on
from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.language.errors import LimitError, ShapeError, SpecError
from layers.language.graph import AnyModel, GraphSpec
from layers.language.model import AnyLayer, ModelSpec

__all__ = [
    "LAYER_SPECS",
    "AnyLayer",
    "AnyModel",
    "ContainerSpec",
    "GraphSpec",
    "LayerSpec",
    "LimitError",
    "ModelSpec",
    "ShapeError",
    "SpecError",
]
