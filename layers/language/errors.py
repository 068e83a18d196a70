"""Errors raised while turning a validated spec into a traced model.

Every error carries ``loc``, the path of the offending node inside the model spec
(``("layers", 3)`` or ``("layers", 3, "in_features")``), so the API can answer in
FastAPI's validation format pointing at the exact layer.
"""

from __future__ import annotations

from typing import Any

Loc = tuple[str | int, ...]


class SpecError(Exception):
    """A spec that is well-formed JSON but cannot be built or traced."""

    error_type = "spec_invalid"

    def __init__(self, loc: Loc, msg: str, ctx: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.ctx = ctx or {}

    def __reduce__(self) -> tuple:
        # Pickled whole (a trace worker sends it to the API): loc, message and context.
        return (type(self), (self.loc, self.msg, self.ctx))

    def under(self, *fields: str | int) -> SpecError:
        """The same error, its loc moved under ``fields`` (e.g. ``under("model")``)."""
        return type(self)((*fields, *self.loc), self.msg, self.ctx)

    def to_detail(self, prefix: Loc = ()) -> dict[str, Any]:
        """One entry of FastAPI's ``{"detail": [...]}`` list."""
        return {"type": self.error_type, "loc": [*prefix, *self.loc], "msg": self.msg, "ctx": self.ctx}


class ShapeError(SpecError):
    """A layer received a tensor it cannot take (wrong size, rank or dtype)."""

    error_type = "shape_mismatch"


class NamingError(SpecError):
    """A layer's ``name`` is taken, or its ``tie_weight`` names no layer it can be tied to."""


class LimitError(SpecError):
    """A spec exceeds a configured limit (layer count, nesting depth)."""

    error_type = "limit_exceeded"
