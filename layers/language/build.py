"""The one recursive walk that builds a model from its inferred spec, names and weight ties included.

``ModelSpec.build`` (training) runs it as is; the trace (``layers.analysis.trace``) runs the same steps
(``claim``, ``leaf``, ``container``) with size inference and meta shapes around them, and builds
a ``Repeat``'s later copies with ``sequence``. So a model is tied and named the same way in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec, shape_str
from layers.language.errors import Loc, NamingError, SpecError


def join(path: str, name: str | int) -> str:
    return f"{path}.{name}" if path else str(name)


@dataclass
class Named:
    path: str  # module path
    spec: LayerSpec
    module: nn.Module | None = None  # set once built


class Builder:
    """Builds modules on the current device; raises ``NamingError`` (absolute ``loc``) on a name
    used twice, a name inside a ``Repeat`` or a ``tie_weight`` that cannot be tied."""

    def __init__(self, param_dtype: torch.dtype | None = None) -> None:
        self.param_dtype = param_dtype  # None: torch's default dtype
        self.named: dict[str, Named] = {}
        self.tied: dict[str, dict[str, str]] = {}  # layer path -> {its parameter: owner layer path}
        self.copies = 0  # how many copy-making containers (Repeat) enclose the current layer

    def sequence(self, specs: list[LayerSpec], loc: Loc, path: str) -> nn.Sequential:
        return nn.Sequential(*(self.layer(spec, (*loc, i), join(path, i)) for i, spec in enumerate(specs)))

    def layer(self, spec: LayerSpec, loc: Loc, path: str) -> nn.Module:
        with self.at(loc):
            self.claim(spec, path)
        if isinstance(spec, ContainerSpec):
            with self.copying(spec):
                modules = [
                    self.sequence(specs, (*loc, *sub), join(path, prefix) if prefix else path)
                    for sub, prefix, specs in spec.sequences()
                ]
            return self.container(spec, modules)
        with self.at(loc):
            return self.leaf(spec, path)

    @contextmanager
    def at(self, loc: Loc) -> Iterator[None]:
        """Moves a ``SpecError`` raised for one layer (its ``loc`` relative to it) under ``loc``."""
        try:
            yield
        except SpecError as e:
            raise type(e)((*loc, *e.loc), e.msg, e.ctx) from e

    @contextmanager
    def copying(self, spec: ContainerSpec) -> Iterator[None]:
        self.copies += spec.copies
        try:
            yield
        finally:
            self.copies -= spec.copies

    def claim(self, spec: LayerSpec, path: str) -> None:
        """Enter the layer's ``name``; a name taken before or inside a Repeat is an error."""
        if spec.name is None:
            return
        if self.copies:
            raise NamingError(
                ("name",),
                f"a layer inside a Repeat cannot be named ({spec.name!r}): each copy would carry the name",
                {"got": spec.name},
            )
        if spec.name in self.named:
            first = self.named[spec.name]
            raise NamingError(
                ("name",),
                f"the name {spec.name!r} is already taken by the {first.spec.type} at module path "
                f"'{first.path}'; names must be unique in the model",
                {"got": spec.name, "taken_by": first.path},
            )
        self.named[spec.name] = Named(path, spec)

    def leaf(self, spec: LayerSpec, path: str) -> nn.Module:
        """Build a leaf layer and tie its weight (errors relative to the layer)."""
        moved = self.param_dtype not in (None, torch.get_default_dtype())
        if moved:  # the schema holds values to the default dtype; .to() would turn the rest inf
            spec.check_held(self.param_dtype)
        module = spec.build()
        if moved:  # .to() walks every tensor
            module.to(self.param_dtype)
        target_name = spec.weight_tie()
        if target_name is not None:
            self.tie(spec, module, path, target_name)
        self._built(spec, module)
        return module

    def container(self, spec: ContainerSpec, modules: list[nn.Sequential]) -> nn.Module:
        module = spec.assemble(modules)
        self._built(spec, module)
        return module

    def _built(self, spec: LayerSpec, module: nn.Module) -> None:
        if spec.name is not None:
            self.named[spec.name].module = module

    def tie(self, spec: LayerSpec, module: nn.Module, path: str, target_name: str) -> None:
        """Make ``spec.tieable_weight`` of ``module`` the very tensor of the layer named ``target_name``."""
        target = self.named.get(target_name)
        if target is None or target.module is None:
            known = [name for name, n in self.named.items() if n.module is not None]
            raise NamingError(
                ("tie_weight",),
                f"no layer before this one is named {target_name!r}"
                + (f" (named so far: {', '.join(known)})" if known else " (no layer is named so far)"),
                {"got": target_name, "names": known},
            )
        if target.spec.tieable_weight is None:
            tieable = [name for name, cls in LAYER_SPECS.items() if cls.tieable_weight]
            raise NamingError(
                ("tie_weight",),
                f"{target_name!r} is a {target.spec.type} (module path '{target.path}'), which has no "
                f"weight to tie to; tie to one of: {', '.join(tieable)}",
                {"got": target.spec.type, "expected": tieable},
            )
        weight = target.module.get_parameter(target.spec.tieable_weight)
        assert spec.tieable_weight is not None  # a layer with a tie_weight field declares its weight
        holder_path, _, attr = spec.tieable_weight.rpartition(".")
        holder = module.get_submodule(holder_path)
        own = holder.get_parameter(attr)
        if own.shape != weight.shape:
            raise NamingError(
                ("tie_weight",),
                f"this {spec.type}'s weight is {shape_str(own.shape)} but {target_name!r} "
                f"({target.spec.type} at '{target.path}') has a weight of {shape_str(weight.shape)}; "
                "a tied weight must have the same shape ([out_features, in_features] = "
                "[num_embeddings, embedding_dim])",
                {"expected": list(own.shape), "got": list(weight.shape)},
            )
        holder.register_parameter(attr, weight)  # the same Parameter object: one tensor
        owner = self.tied.get(target.path, {}).get(target.spec.tieable_weight, target.path)
        self.tied[path] = {spec.tieable_weight: owner}
