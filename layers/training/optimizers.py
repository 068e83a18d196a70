"""Optimizer specs: one class per ``torch.optim`` optimizer, registered like layers.

Each spec builds its optimizer over a model's parameters and says how many parameter-sized
state tensors it keeps, for the memory estimate made before a job is queued.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from layers.language.spec import TypedSpec, union_of

OPTIMIZER_SPECS: dict[str, type[OptimizerSpec]] = {}
OptimizerClass = type[torch.optim.Optimizer]  # aliased: inside a spec class, `type` is the field

LearningRate = Annotated[float, Field(gt=0, le=10, description="learning rate")]
WeightDecay = Annotated[float, Field(ge=0, le=1, description="L2 penalty (decoupled for AdamW)")]
Beta = Annotated[float, Field(ge=0, lt=1)]
Eps = Annotated[float, Field(gt=0, le=1, description="added to denominators for stability")]


class OptimizerSpec(TypedSpec):
    """Base of every optimizer spec: strict, immutable, registered by its ``type`` literal."""

    registry: ClassVar[dict[str, Any]] = OPTIMIZER_SPECS

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError


class SGDSpec(OptimizerSpec):
    """Stochastic gradient descent, with optional (Nesterov) momentum."""

    type: Literal["SGD"] = "SGD"
    lr: LearningRate = 0.01
    momentum: float = Field(0.0, ge=0, lt=1)
    dampening: float = Field(0.0, ge=0, le=1)
    nesterov: bool = False
    weight_decay: WeightDecay = 0.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov needs a momentum above 0 and no dampening")
        return self

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )


class AdamSpec(OptimizerSpec):
    """Adam: per-parameter step sizes from running moments of the gradient."""

    optimizer_class: ClassVar[OptimizerClass] = torch.optim.Adam
    type: Literal["Adam"] = "Adam"
    lr: LearningRate = 0.001
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0
    amsgrad: bool = False

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return self.optimizer_class(
            params,
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
            amsgrad=self.amsgrad,
        )


class AdamWSpec(AdamSpec):
    """AdamW: Adam with decoupled weight decay."""

    type: Literal["AdamW"] = "AdamW"
    optimizer_class: ClassVar[OptimizerClass] = torch.optim.AdamW
    weight_decay: WeightDecay = 0.01


class RMSpropSpec(OptimizerSpec):
    """RMSprop: step sizes from a running average of squared gradients."""

    type: Literal["RMSprop"] = "RMSprop"
    lr: LearningRate = 0.01
    alpha: float = Field(0.99, ge=0, lt=1, description="smoothing constant")
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.0
    momentum: float = Field(0.0, ge=0, lt=1)
    centered: bool = False

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(
            params,
            lr=self.lr,
            alpha=self.alpha,
            eps=self.eps,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            centered=self.centered,
        )


AnyOptimizer = union_of(OPTIMIZER_SPECS)
