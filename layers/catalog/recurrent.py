"""Recurrent layers. Each returns its output sequence (or only its last step), not a tuple."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.language.base import LayerSpec, OptionalSize, Shape, Size, expect_rank, infer_size

Output = Literal["sequence", "last"]
ModuleClass = type[nn.Module]  # aliased: inside a spec class, `type` is the field


class _ReturnsOutput:
    """Mixin for the torch recurrent modules: forward returns a tensor, not ``(out, state)``."""

    def __init__(self, *args: Any, output: Output = "sequence", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = super().forward(x)  # (B, T, H * dirs) when batch_first
        if self.output == "last":
            return out.select(1 if self.batch_first and out.dim() == 3 else 0, -1)
        return out

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        return extra + ", output=last" if self.output == "last" else extra


class RNN(_ReturnsOutput, nn.RNN):
    pass


class LSTM(_ReturnsOutput, nn.LSTM):
    pass


class GRU(_ReturnsOutput, nn.GRU):
    pass


class RecurrentSpec(LayerSpec):
    """Fields shared by RNN, LSTM and GRU (not a registered type)."""

    category: ClassVar[str] = "recurrent"
    module_class: ClassVar[ModuleClass]
    input_size: OptionalSize = Field(None, description="features per step; inferred from the input")
    hidden_size: Size
    num_layers: int = Field(1, ge=1, le=64)
    bias: bool = True
    batch_first: bool = Field(True, description="input is [B, T, F] (PyTorch's default is False)")
    dropout: float = Field(0.0, ge=0.0, le=1.0)
    bidirectional: bool = False
    output: Output = Field("sequence", description="'sequence': every step; 'last': the last step only")

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        return self.model_copy(update={"input_size": infer_size(self.input_size, shape, -1, "input_size")})

    def build(self) -> nn.Module:
        return self.module_class(**self.arguments())

    def trace(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        # On meta a recurrent layer unrolls into per-step ops (seconds for long sequences), and
        # its cost is exactly linear in the step count: trace one step, scale the count.
        time_dim = 1 if self.batch_first and x.dim() == 3 else 0
        steps = x.shape[time_dim]
        out, flops = super().trace(module, x.narrow(time_dim, 0, 1))
        if self.output == "sequence":
            shape = list(out.shape)
            shape[time_dim] = steps
            out = out.new_empty(shape)
        return out, flops * steps


class RNNSpec(RecurrentSpec):
    """Elman RNN (tanh or relu) returning its output sequence."""

    module_class: ClassVar[ModuleClass] = RNN
    type: Literal["RNN"] = "RNN"
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTMSpec(RecurrentSpec):
    """Long short-term memory returning its output sequence."""

    module_class: ClassVar[ModuleClass] = LSTM
    type: Literal["LSTM"] = "LSTM"
    proj_size: int = Field(0, ge=0, le=1 << 20)


class GRUSpec(RecurrentSpec):
    """Gated recurrent unit returning its output sequence."""

    module_class: ClassVar[ModuleClass] = GRU
    type: Literal["GRU"] = "GRU"
