"""Loss specs: one class per loss, registered like layers, with what each needs of its targets.

A loss spec builds its ``nn.Module``, checks that a model's output can be compared with a
dataset's targets (before anything is queued), converts the dataset's targets into what the
loss takes (class indices, one-hot floats, real values), and counts correct predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from layers.language.base import Shape, shape_str
from layers.language.errors import Loc, ShapeError, SpecError
from layers.language.spec import SpecModel, TypedSpec, union_of

LOSS_SPECS: dict[str, type[LossSpec]] = {}


@dataclass(frozen=True)
class Targets:
    """What a dataset provides per sample: class indices (``num_classes`` set) or real values."""

    num_classes: int | None  # None for real-valued (regression) targets
    shape: Shape  # per-sample target shape; () for one class index per sample

    def describe(self) -> str:
        if self.num_classes is not None:
            return f"class indices ({self.num_classes} classes)"
        return f"real values of shape {shape_str(self.shape)} per sample"


class LossSpec(TypedSpec):
    """Base of every loss spec: strict, immutable, registered by its ``type`` literal."""

    task: ClassVar[Literal["classification", "regression"]] = "regression"
    registry: ClassVar[dict[str, Any]] = LOSS_SPECS

    def build(self) -> nn.Module:
        raise NotImplementedError

    def check(self, output: Shape, targets: Targets, output_loc: Loc) -> None:
        """Raise ``SpecError`` unless a per-sample ``output`` can be compared with ``targets``.

        ``output_loc`` is the body-relative loc of the model's last layer, named in errors
        about the output's size; errors about the loss itself point at ``("loss", ...)``.
        """
        if (targets.num_classes is None) != (self.task == "regression"):
            wanted = "class labels" if self.task == "classification" else "real-valued targets"
            raise SpecError(
                ("loss", "type"),
                f"{self.type} is a {self.task} loss and needs {wanted}, but the dataset provides "
                f"{targets.describe()}",
                {"loss": self.type, "task": self.task},
            )

    def prepare(self, y: torch.Tensor, output: Shape) -> torch.Tensor:
        """The dataset's targets in the form this loss takes, for a per-sample ``output`` shape."""
        return y

    def classes(self, out: torch.Tensor) -> torch.Tensor:
        """The predicted class index of each sample of a batch of outputs (classification losses)."""
        raise NotImplementedError

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """Each sample's class probabilities, ``[B, classes]`` (classification losses)."""
        raise NotImplementedError

    def correct(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How many predictions in ``out`` match the class ``labels`` (classification losses)."""
        return (self.classes(out) == labels).sum()


class _RegressionLoss(LossSpec):
    def check(self, output: Shape, targets: Targets, output_loc: Loc) -> None:
        super().check(output, targets, output_loc)
        expected = _regression_shape(targets.shape, output)
        if tuple(output) != expected:
            raise ShapeError(
                output_loc,
                f"the model outputs {shape_str(output)} per sample but the targets are "
                f"{shape_str(targets.shape)} per sample; {self.type} needs the same shape",
                {"expected": list(expected), "got": list(output)},
            )

    def prepare(self, y: torch.Tensor, output: Shape) -> torch.Tensor:
        return y.float().reshape(y.shape[0], *_regression_shape(tuple(y.shape[1:]), output))


def _regression_shape(target: Shape, output: Shape) -> Shape:
    # One value per sample fits a model ending in a single output unit.
    return (1,) if target == () and tuple(output) == (1,) else target


class _ClassIndexLoss(LossSpec):
    """A loss on class scores ``[B, C]`` against class indices ``[B]``."""

    task: ClassVar[Literal["classification", "regression"]] = "classification"

    def check(self, output: Shape, targets: Targets, output_loc: Loc) -> None:
        super().check(output, targets, output_loc)
        assert targets.num_classes is not None
        if len(output) != 1 or output[0] < targets.num_classes:
            raise ShapeError(
                output_loc,
                f"{self.type} needs one score per class, at least {targets.num_classes} per sample, "
                f"but the model outputs {shape_str(output)} per sample",
                {"expected": [targets.num_classes], "got": list(output)},
            )

    def prepare(self, y: torch.Tensor, output: Shape) -> torch.Tensor:
        return y.long()

    def classes(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(dim=1)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(dim=1)  # of logits, or of log-probabilities (NLLLoss): the same


class MSELossSpec(_RegressionLoss):
    """Mean squared error, for regression."""

    type: Literal["MSELoss"] = "MSELoss"

    def build(self) -> nn.Module:
        return nn.MSELoss()


class L1LossSpec(_RegressionLoss):
    """Mean absolute error, for regression."""

    type: Literal["L1Loss"] = "L1Loss"

    def build(self) -> nn.Module:
        return nn.L1Loss()


class SmoothL1LossSpec(_RegressionLoss):
    """Huber-like loss: squared below ``beta``, absolute above it."""

    type: Literal["SmoothL1Loss"] = "SmoothL1Loss"
    beta: float = Field(1.0, ge=0, le=1e6, description="where the loss turns from squared to absolute")

    def build(self) -> nn.Module:
        return nn.SmoothL1Loss(beta=self.beta)


class CrossEntropyLossSpec(_ClassIndexLoss):
    """Softmax cross-entropy on raw class scores (logits)."""

    type: Literal["CrossEntropyLoss"] = "CrossEntropyLoss"
    label_smoothing: float = Field(0.0, ge=0, le=1, description="share of the target spread over all classes")

    def build(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)


class NLLLossSpec(_ClassIndexLoss):
    """Negative log-likelihood on log-probabilities (end the model with LogSoftmax)."""

    type: Literal["NLLLoss"] = "NLLLoss"

    def build(self) -> nn.Module:
        return nn.NLLLoss()


class BCEWithLogitsLossSpec(LossSpec):
    """Sigmoid + binary cross-entropy: one logit for two classes, or one logit per class (one-hot)."""

    task: ClassVar[Literal["classification", "regression"]] = "classification"
    type: Literal["BCEWithLogitsLoss"] = "BCEWithLogitsLoss"
    pos_weight: float | None = Field(
        None, gt=0, le=1e6, description="weight of positive examples, for imbalanced classes"
    )

    def build(self) -> nn.Module:
        weight = None if self.pos_weight is None else torch.tensor([self.pos_weight])
        return nn.BCEWithLogitsLoss(pos_weight=weight)

    def check(self, output: Shape, targets: Targets, output_loc: Loc) -> None:
        super().check(output, targets, output_loc)
        classes = targets.num_classes
        if tuple(output) == (1,) and classes is not None and classes <= 2:
            return
        if tuple(output) != (classes,):
            raise ShapeError(
                output_loc,
                f"BCEWithLogitsLoss needs one logit per sample for 2 classes, or one logit per "
                f"class ({classes}), but the model outputs {shape_str(output)} per sample",
                {"expected": [1] if classes == 2 else [classes], "got": list(output)},
            )

    def prepare(self, y: torch.Tensor, output: Shape) -> torch.Tensor:
        if tuple(output) == (1,):
            return y.float().unsqueeze(1)
        return nn.functional.one_hot(y.long(), output[0]).float()

    def classes(self, out: torch.Tensor) -> torch.Tensor:
        return (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(dim=1)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        p = out.sigmoid()  # one logit: [P(0), P(1)]; one per class: independent per class
        return torch.cat([1 - p, p], dim=1) if out.shape[1] == 1 else p


AnyLoss = union_of(LOSS_SPECS)


# A graph job's loss on one output: any loss spec with its ``weight`` in the job's total.
LOSS_TERMS: dict[str, type[LossSpec]] = {}


class _Weighted(SpecModel):
    registry: ClassVar[dict[str, Any]] = LOSS_TERMS
    weight: float = Field(1.0, gt=0, le=1e6, description="this output's factor in the job's total loss")


for _spec in list(LOSS_SPECS.values()):
    _name = _spec.__name__.removesuffix("Spec") + "Term"
    type(_name, (_Weighted, _spec), {"__module__": __name__, "__doc__": _spec.__doc__})

AnyLossTerm = union_of(LOSS_TERMS)


def as_term(loss: LossSpec, weight: float = 1.0) -> LossSpec:
    """``loss`` as a weighted term (its ``weight`` field set)."""
    return LOSS_TERMS[loss.type].model_validate({**loss.model_dump(), "weight": weight})
