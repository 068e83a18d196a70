"""A model spec held to the service's size limits, before anything traces it."""

from __future__ import annotations

from app.core.config import settings
from layers import ModelSpec
from layers.language.errors import SpecError


def check_model(spec: ModelSpec) -> None:
    """``LimitError`` at ``model`` (the request body's field) past ``MB_MAX_LAYERS`` or
    ``MB_MAX_NESTING``."""
    try:
        spec.check_limits(settings.max_layers, settings.max_nesting)
    except SpecError as e:
        raise e.under("model") from e
