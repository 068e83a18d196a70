"""Recurrent layers. Each returns its output sequence (or only its last step), not a tuple; as a
graph node it may also return its final state and take an initial one (``h0``, ``c0``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar, Literal, Self

import torch
from pydantic import Field
from torch import nn

from layers.language.base import LayerSpec, OptionalSize, Shape, Size, expect_rank, infer_size
from layers.language.errors import ShapeError
from layers.language.flops import FlopCounter

Output = Literal["sequence", "last", "sequence_and_state"]
ModuleClass = type[nn.Module]  # aliased: inside a spec class, `type` is the field


class _ReturnsOutput:
    """Mixin for the torch recurrent modules: forward returns a tensor, not ``(out, state)``; with
    ``output="sequence_and_state"``, the flat tuple ``(out, h_n)`` or ``(out, h_n, c_n)``."""

    def __init__(self, *args: Any, output: Output = "sequence", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output = output

    def run(self, x: torch.Tensor, hx: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out, state = super().forward(x, hx)  # (B, T, H * dirs) when batch_first
        if self.output == "last":
            return out.select(1 if self.batch_first and out.dim() == 3 else 0, -1)
        if self.output == "sequence_and_state":
            return (out, *state) if isinstance(state, tuple) else (out, state)
        return out

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        return extra + f", output={self.output}" if self.output != "sequence" else extra


class RNN(_ReturnsOutput, nn.RNN):
    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> Any:
        return self.run(x, h0)


class LSTM(_ReturnsOutput, nn.LSTM):
    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None) -> Any:
        return self.run(x, None if h0 is None else (h0, c0))


class GRU(_ReturnsOutput, nn.GRU):
    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> Any:
        return self.run(x, h0)


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
    output: Output = Field(
        "sequence",
        description="'sequence': every step; 'last': the last step only; 'sequence_and_state': every "
        "step and the final state, (output, h_n) or for an LSTM (output, h_n, c_n): a graph node, "
        "referred to as 'name.0', 'name.1', 'name.2'",
    )

    def infer(self, shape: Shape) -> Self:
        expect_rank(shape, (2, 3), self.type)
        return self.model_copy(update={"input_size": infer_size(self.input_size, shape, -1, "input_size")})

    def build(self) -> nn.Module:
        return self.module_class(**self.arguments())

    def returns(self) -> tuple[str, ...]:
        if self.output != "sequence_and_state":
            return ()
        return ("output", "h_n", "c_n") if "c0" in self.tensor_args else ("output", "h_n")

    def trace(
        self, module: nn.Module, x: torch.Tensor, counter: FlopCounter, **tensors: torch.Tensor
    ) -> tuple[Any, int]:
        # On meta a recurrent layer unrolls into per-step ops (seconds for long sequences), and
        # its cost is exactly linear in the step count: trace one step, scale the count.
        time_dim = 1 if self.batch_first and x.dim() == 3 else 0
        steps = x.shape[time_dim]
        out, flops = super().trace(module, x.narrow(time_dim, 0, 1), counter, **tensors)
        if self.output != "last":
            first = out[0] if isinstance(out, tuple) else out
            shape = list(first.shape)
            shape[time_dim] = steps
            first = first.new_empty(shape)
            out = (first, *out[1:]) if isinstance(out, tuple) else first
        return out, flops * steps


class RNNSpec(RecurrentSpec):
    """Elman RNN (tanh or relu) returning its output sequence."""

    module_class: ClassVar[ModuleClass] = RNN
    tensor_args: ClassVar[tuple[str, ...]] = ("h0",)
    type: Literal["RNN"] = "RNN"
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTMSpec(RecurrentSpec):
    """Long short-term memory returning its output sequence."""

    module_class: ClassVar[ModuleClass] = LSTM
    tensor_args: ClassVar[tuple[str, ...]] = ("h0", "c0")
    type: Literal["LSTM"] = "LSTM"
    proj_size: int = Field(0, ge=0, le=1 << 20)

    def check_tensor_args(self, given: Collection[str]) -> None:
        super().check_tensor_args(given)
        if ("h0" in given) != ("c0" in given):
            have, lack = ("h0", "c0") if "h0" in given else ("c0", "h0")
            raise ShapeError(
                (),
                f"an LSTM's initial state is h0 and c0 together: `{have}` is given but `{lack}` is not",
                {"expected": ["h0", "c0"], "got": sorted(given)},
            )


class GRUSpec(RecurrentSpec):
    """Gated recurrent unit returning its output sequence."""

    module_class: ClassVar[ModuleClass] = GRU
    tensor_args: ClassVar[tuple[str, ...]] = ("h0",)
    type: Literal["GRU"] = "GRU"
