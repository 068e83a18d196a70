"""Dropout layers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from layers.language.base import ShapePreservingSpec


class DropoutSpec(ShapePreservingSpec):
    """Zeroes elements with probability p during training."""

    category: ClassVar[str] = "dropout"
    type: Literal["Dropout"] = "Dropout"
    p: float = Field(0.5, ge=0.0, le=1.0)

    def build(self) -> nn.Module:
        return nn.Dropout(self.p)


class Dropout2dSpec(ShapePreservingSpec):
    """Zeroes whole channels with probability p during training."""

    category: ClassVar[str] = "dropout"
    type: Literal["Dropout2d"] = "Dropout2d"
    p: float = Field(0.5, ge=0.0, le=1.0)

    def build(self) -> nn.Module:
        return nn.Dropout2d(self.p)
