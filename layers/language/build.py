"""The build pass: a model's modules from its inferred spec, names and weight ties included.

``ModelSpec.build`` (training) runs it as is; the trace (``layers.analysis.trace``) is this pass
with size inference and meta shapes around each step. So a model is tied and named the same way
in both, by the one walk (``layers.language.walk``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from layers.language.base import ContainerSpec, LayerSpec, shape_str
from layers.language.errors import NamingError
from layers.language.graph_module import GraphModule, Wiring
from layers.language.walk import Node, Walk


def construct(cls: type[nn.Module], /, *args: Any, **kwargs: Any) -> nn.Module:
    """The build's ``Make``: the module itself."""
    return cls(*args, **kwargs)


class Builder(Walk[nn.Module, nn.Sequential]):
    """Builds modules on the current device; raises ``NamingError`` (absolute ``loc``) on a name
    used twice, a name inside a ``Repeat`` or a ``tie_weight`` that cannot be tied."""

    def __init__(self, param_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.param_dtype = param_dtype  # None: torch's default dtype
        self.modules: dict[str, nn.Module] = {}  # module path -> module, of the named layers

    def graph(
        self,
        tops: Iterable[Node],
        wiring: list[Wiring],
        input_names: tuple[str, ...],
        outputs: dict[str, str],
    ) -> GraphModule:
        """A graph's module: each node (``tops``) built by the walk, names and ties alike, then wired."""
        modules = {node.path: self.layer(node, None) for node in tops}
        return GraphModule(modules, wiring, input_names, outputs)

    def leaf(self, node: Node, x: Any) -> nn.Module:
        return self.build(node, node.spec)

    def made_sequence(self, results: list[nn.Module]) -> nn.Sequential:
        return nn.Sequential(*results)

    def container(self, node: Node, x: Any, sequences: list[nn.Sequential], outputs: list[Any]) -> nn.Module:
        assert isinstance(node.spec, ContainerSpec)
        return self.assemble(node, node.spec, sequences)

    def build(self, node: Node, spec: LayerSpec) -> nn.Module:
        """Build a leaf layer from ``spec`` (the node's, inferred), freeze it if the node is frozen
        and tie its weight: a tied weight is its owner's Parameter, frozen as the owner is."""
        module = self.make(node, spec)
        if node.frozen:
            module.requires_grad_(False)
        target = self.tie_target(node)
        if target is not None:
            self.tie(spec, module, target)
        self._keep(node, module)
        return module

    def make(self, node: Node, spec: LayerSpec) -> nn.Module:
        """The leaf's own module, untied, in the parameter dtype."""
        moved = self.param_dtype not in (None, torch.get_default_dtype())
        if moved:  # the schema holds values to the default dtype; .to() would turn the rest inf
            spec.check_held(self.param_dtype)
        module = spec.build()
        if moved:  # .to() walks every tensor
            module.to(self.param_dtype)
        return module

    def assemble(self, node: Node, spec: ContainerSpec, sequences: list[nn.Sequential]) -> nn.Module:
        module = spec.assemble(construct, sequences)
        self._keep(node, module)
        return module

    def _keep(self, node: Node, module: nn.Module) -> None:
        if node.spec.name is not None:
            self.modules[node.path] = module

    def tie(self, spec: LayerSpec, module: nn.Module, target: Node) -> None:
        """Make ``spec.tieable_weight`` of ``module`` the very tensor of ``target``'s weight."""
        assert spec.tieable_weight is not None and target.spec.tieable_weight is not None
        weight = self.modules[target.path].get_parameter(target.spec.tieable_weight)
        holder_path, _, attr = spec.tieable_weight.rpartition(".")
        holder = module.get_submodule(holder_path)
        own = holder.get_parameter(attr)
        if own.shape != weight.shape:
            raise NamingError(
                ("tie_weight",),
                f"this {spec.type}'s weight is {shape_str(own.shape)} but {target.spec.name!r} "
                f"({target.spec.type} at '{target.path}') has a weight of {shape_str(weight.shape)}; "
                "a tied weight must have the same shape ([out_features, in_features] = "
                "[num_embeddings, embedding_dim])",
                {"expected": list(own.shape), "got": list(weight.shape)},
            )
        holder.register_parameter(attr, weight)  # the same Parameter object: one tensor
