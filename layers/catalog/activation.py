"""Activations, and the closed table of activation names other layers may choose from."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field
from torch import nn

from layers.language.base import Dim, ParameterValue, Shape, ShapePreservingSpec, Size, expect_dim, shape_str
from layers.language.errors import ShapeError

# The names a block may choose (``ConvBlock.activation``): a closed table, never a lookup.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}
ActivationName = Literal["relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "identity"]
assert set(ActivationName.__args__) == set(ACTIVATIONS)


class ActivationSpec(ShapePreservingSpec):
    """Base of the element-wise activations (not a registered type)."""

    category: ClassVar[str] = "activation"


class ReLUSpec(ActivationSpec):
    """Rectified linear unit: max(0, x)."""

    type: Literal["ReLU"] = "ReLU"

    def build(self) -> nn.Module:
        return nn.ReLU()


class LeakyReLUSpec(ActivationSpec):
    """Leaky ReLU: x if x > 0 else negative_slope * x."""

    type: Literal["LeakyReLU"] = "LeakyReLU"
    negative_slope: float = 0.01

    def build(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


class ELUSpec(ActivationSpec):
    """Exponential linear unit."""

    type: Literal["ELU"] = "ELU"
    alpha: float = 1.0

    def build(self) -> nn.Module:
        return nn.ELU(self.alpha)


class GELUSpec(ActivationSpec):
    """Gaussian error linear unit."""

    type: Literal["GELU"] = "GELU"
    approximate: Literal["none", "tanh"] = "none"

    def build(self) -> nn.Module:
        return nn.GELU(approximate=self.approximate)


class SiLUSpec(ActivationSpec):
    """Sigmoid linear unit (swish): x * sigmoid(x)."""

    type: Literal["SiLU"] = "SiLU"

    def build(self) -> nn.Module:
        return nn.SiLU()


class SigmoidSpec(ActivationSpec):
    """Logistic sigmoid."""

    type: Literal["Sigmoid"] = "Sigmoid"

    def build(self) -> nn.Module:
        return nn.Sigmoid()


class TanhSpec(ActivationSpec):
    """Hyperbolic tangent."""

    type: Literal["Tanh"] = "Tanh"

    def build(self) -> nn.Module:
        return nn.Tanh()


class SoftmaxSpec(ActivationSpec):
    """Softmax over dimension `dim`."""

    type: Literal["Softmax"] = "Softmax"
    dim: Dim = Field(-1, description="dimension to normalise over")

    def infer(self, shape: Shape) -> Self:
        expect_dim(shape, self.dim)
        return self

    def build(self) -> nn.Module:
        return nn.Softmax(dim=self.dim)


class LogSoftmaxSpec(ActivationSpec):
    """Log of the softmax over dimension `dim` (pair with NLLLoss)."""

    type: Literal["LogSoftmax"] = "LogSoftmax"
    dim: Dim = Field(-1, description="dimension to normalise over")

    def infer(self, shape: Shape) -> Self:
        expect_dim(shape, self.dim)
        return self

    def build(self) -> nn.Module:
        return nn.LogSoftmax(dim=self.dim)


class ReLU6Spec(ActivationSpec):
    """ReLU capped at 6: min(max(0, x), 6) (MobileNet)."""

    type: Literal["ReLU6"] = "ReLU6"

    def build(self) -> nn.Module:
        return nn.ReLU6()


class HardswishSpec(ActivationSpec):
    """Hard swish: x * relu6(x + 3) / 6 (MobileNetV3)."""

    type: Literal["Hardswish"] = "Hardswish"

    def build(self) -> nn.Module:
        return nn.Hardswish()


class HardsigmoidSpec(ActivationSpec):
    """Hard sigmoid: relu6(x + 3) / 6 (MobileNetV3's squeeze-excitation gate)."""

    type: Literal["Hardsigmoid"] = "Hardsigmoid"

    def build(self) -> nn.Module:
        return nn.Hardsigmoid()


class MishSpec(ActivationSpec):
    """Mish: x * tanh(softplus(x))."""

    type: Literal["Mish"] = "Mish"

    def build(self) -> nn.Module:
        return nn.Mish()


class SoftplusSpec(ActivationSpec):
    """Softplus: log(1 + exp(beta * x)) / beta, linear above `threshold`."""

    type: Literal["Softplus"] = "Softplus"
    beta: float = Field(1.0, gt=0)
    threshold: float = Field(20.0, description="above beta * x > threshold the output is x")

    def build(self) -> nn.Module:
        return nn.Softplus(self.beta, self.threshold)


class PReLUSpec(ActivationSpec):
    """Parametric ReLU: x if x > 0 else a * x, with a learned (one, or one per channel)."""

    type: Literal["PReLU"] = "PReLU"
    num_parameters: Size = Field(1, description="1 (one shared a) or the number of channels (dimension 1)")
    init: ParameterValue = Field(0.25, description="initial value of a (within float32's range)")

    def infer(self, shape: Shape) -> Self:
        if self.num_parameters != 1:
            channels = shape[1] if len(shape) >= 2 else shape[0]
            if channels != self.num_parameters:
                raise ShapeError(
                    ("num_parameters",),
                    f"expected 1 or the input's channel count {channels} (dimension {int(len(shape) >= 2)} "
                    f"of {shape_str(shape)}), got {self.num_parameters}",
                    {"expected": [1, channels], "got": self.num_parameters},
                )
        return self

    def build(self) -> nn.Module:
        return nn.PReLU(self.num_parameters, self.init)
