"""A model spec held to the service's size limits, before anything traces it."""

from __future__ import annotations

import math

from app.core.config import settings
from layers import GraphSpec, ModelSpec
from layers.language.errors import LimitError, SpecError


def check_model(spec: ModelSpec | GraphSpec) -> None:
    """``LimitError`` at ``model`` (the request body's field) past ``MB_MAX_LAYERS`` or
    ``MB_MAX_NESTING``; a graph's inputs are held to the input limits and its wiring checked
    (``GraphSpec.check``), all before anything is traced."""
    try:
        spec.check_limits(settings.max_layers, settings.max_nesting)
        if isinstance(spec, GraphSpec):
            for name, given in spec.inputs.items():
                _check_input(name, given.shape)
            spec.check()
    except SpecError as e:
        raise e.under("model") from e


def _check_input(name: str, shape: list[int]) -> None:
    loc = ("inputs", name, "shape")
    if len(shape) > settings.max_input_rank:
        raise LimitError(
            loc,
            f"the input {name!r} has {len(shape)} dimensions; the limit is {settings.max_input_rank}",
            {"limit": settings.max_input_rank, "got": len(shape)},
        )
    for i, size in enumerate(shape):
        if size > settings.max_input_dim:
            raise LimitError(
                (*loc, i),
                f"dimension {i} of the input {name!r} is {size}; the limit is {settings.max_input_dim}",
                {"limit": settings.max_input_dim, "got": size},
            )
    if math.prod(shape) > settings.max_input_numel:
        raise LimitError(
            loc,
            f"the input {name!r} has {math.prod(shape)} elements; the limit is {settings.max_input_numel}",
            {"limit": settings.max_input_numel, "got": math.prod(shape)},
        )
