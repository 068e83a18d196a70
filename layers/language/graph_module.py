"""The module a graph model builds: its nodes' modules under their names, run in topological order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Wiring:
    """What one node takes: the refs of its main input(s) and of its tensor keyword arguments."""

    node: str
    inputs: tuple[str, ...]  # one for a layer, several for a merge
    args: tuple[tuple[str, str], ...] = ()  # (torch's argument name, ref)


def value(values: dict[str, Any], ref: str) -> torch.Tensor:
    """The tensor ``ref`` names: an input or node (``"enc"``) or output K of a node (``"sp.1"``)."""
    name, _, k = ref.partition(".")
    return values[name][int(k)] if k else values[name]


def call_with_args(module: nn.Module, inputs: list[torch.Tensor], kwargs: dict[str, torch.Tensor]) -> Any:
    """``module`` on its inputs, its tensor keyword arguments passed to every layer of a sequence
    (a Repeat passes a mask to each of its copies)."""
    if not kwargs:
        return module(*inputs)
    if isinstance(module, nn.Sequential):
        (x,) = inputs
        for layer in module:
            x = call_with_args(layer, [x], kwargs)
        return x
    return module(*inputs, **kwargs)


class GraphModule(nn.Module):
    """``forward(**inputs) -> {output name: tensor}``; each node's module is the attribute of its
    name, so parameters are named ``tok.weight``, ``enc.0.0.linear1.weight``..."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        wiring: list[Wiring],
        input_names: tuple[str, ...],
        outputs: dict[str, str],
    ) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.wiring = tuple(wiring)
        self.input_names = tuple(input_names)
        self.output_names = tuple(outputs)
        self.output_refs = dict(outputs)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        values: dict[str, Any] = dict(inputs)
        for w in self.wiring:
            module = self.get_submodule(w.node)
            args = {arg: value(values, ref) for arg, ref in w.args}
            values[w.node] = call_with_args(module, [value(values, ref) for ref in w.inputs], args)
        return {name: value(values, ref) for name, ref in self.output_refs.items()}
