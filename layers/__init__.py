"""The layer registry and the JSON spec language. No web code lives here.

Importing a module below registers its spec classes; the order is the catalog's order.
"""

from layers import (  # noqa: F401  (imported to register their layer types)
    activation,
    attention,
    causal_attention,
    containers,
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
    swiglu,
)
from layers.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.errors import LimitError, ShapeError, SpecError
from layers.model import AnyLayer, ModelSpec

__all__ = [
    "LAYER_SPECS",
    "AnyLayer",
    "ContainerSpec",
    "LayerSpec",
    "LimitError",
    "ModelSpec",
    "ShapeError",
    "SpecError",
]
