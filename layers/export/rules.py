"""Code-export rules for the layer specs that do not map one to one onto their module's arguments.

Every other layer is written by ``CodeWriter.default``: its module's class called with the spec
fields its ``__init__`` takes. A rule gets the (inferred) spec and ``call``, which writes
``cls(*args, **kwargs)`` in the exported file (``CodeWriter.call``), and returns the expression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from layers.catalog.attention import (
    TransformerDecoderLayerSpec,
    TransformerEncoderLayerSpec,
    TransformerLayerSpec,
    feedforward_activation,
)
from layers.language.base import LayerSpec

Call = Callable[..., Any]


def _transformer_layer(spec: TransformerLayerSpec, call: Call) -> Any:
    # The feed-forward activation is torch's name, or a module for gelu_tanh: written as its call.
    activation = feedforward_activation(spec.activation)
    if isinstance(activation, nn.GELU):
        activation = call(nn.GELU, approximate=activation.approximate)
    args = spec.arguments("activation")
    return call(spec.module_class, **args, activation=activation)


CODE_RULES: dict[type[LayerSpec], Callable[[Any, Call], Any]] = {
    TransformerEncoderLayerSpec: _transformer_layer,
    TransformerDecoderLayerSpec: _transformer_layer,
}
