"""FLOPs of a layer's forward on meta, by torch's own formulas (``flop_registry``).

``FlopCounterMode`` counts the same way, and also tracks modules: it hooks every module call and
registers autograd hooks on their inputs, which a trace does not need (it wants one total per
layer). ``FlopCounter`` follows its dispatch exactly (each operator with a CompositeImplicit
kernel is decomposed with the mode on; what is left is run and counted), without the module
tracking, so that one mode can both count and, in the analysis, note what it cannot count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

_IMPLICIT = torch._C.DispatchKey.CompositeImplicitAutograd
aten = torch.ops.aten
# The metadata queries FlopCounterMode leaves to the tensor itself (for nested tensors).
_METADATA = frozenset(
    {
        aten.sym_is_contiguous.default,
        aten.is_contiguous.default,
        aten.is_contiguous.memory_format,
        aten.is_strides_like_format.default,
        aten.is_non_overlapping_and_dense.default,
        aten.size.default,
        aten.sym_size.default,
        aten.stride.default,
        aten.sym_stride.default,
        aten.storage_offset.default,
        aten.sym_storage_offset.default,
        aten.numel.default,
        aten.sym_numel.default,
        aten.dim.default,
        torch.ops.prim.layout.default,
    }
)


@functools.cache
def _decomposes(func: torch._ops.OpOverload) -> bool:
    """Whether ``func.decompose`` runs a decomposition (what it checks on every call, cached)."""
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    return _IMPLICIT in func.py_kernels or has_kernel(func.name(), _IMPLICIT)


class FlopCounter(TorchDispatchMode):
    """Counts the FLOPs of the operators run under it, as ``FlopCounterMode`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def count(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """``fn(*args, **kwargs)`` under the counter: its result and the FLOPs it ran."""
        before = self.flops
        with self:
            out = fn(*args, **kwargs)
        return out, self.flops - before

    def not_counted(self, func: torch._ops.OpOverload, args: tuple) -> None:
        """Called for each operator run that no formula counts (a subclass notes them)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _METADATA:
            return NotImplemented
        if _decomposes(func):
            with self:
                return func.decompose(*args, **kwargs)
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is None:
            self.not_counted(func, args)
        else:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out
