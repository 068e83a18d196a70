"""A model's named inputs and outputs: the one interface jobs, predict and exports use for both forms.

A sequence model (``{"layers": [...]}``) has one input, ``"input"``, and one output, ``"output"``.
A graph model names its own (``{"inputs": {...}, "outputs": {...}}``). Datasets map these names to
their arrays, graph jobs key their losses by output name, and predict answers per output.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

SEQUENCE_INPUT = "input"
SEQUENCE_OUTPUT = "output"


def input_names(model: object) -> tuple[str, ...]:
    """The names of ``model``'s inputs, in the order its ``forward`` takes them."""
    names = getattr(model, "input_names", None)  # a graph spec, or its built module
    return tuple(names) if names is not None else (SEQUENCE_INPUT,)


def output_names(model: object) -> tuple[str, ...]:
    """The names of ``model``'s outputs, in the order its ``forward`` returns them."""
    names = getattr(model, "output_names", None)
    return tuple(names) if names is not None else (SEQUENCE_OUTPUT,)


def run(module: nn.Module, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module`` on ``inputs`` by name, its outputs by name: one call for both forms."""
    names = input_names(module)
    missing = [name for name in names if name not in inputs]
    if missing:
        raise KeyError(f"the model's inputs {missing} are not given (it takes {list(names)})")
    if names == (SEQUENCE_INPUT,) and not hasattr(module, "input_names"):
        return {SEQUENCE_OUTPUT: module(inputs[SEQUENCE_INPUT])}
    return dict(module(**{name: inputs[name] for name in names}))
