"""The trace cache: what tracing one layer found, kept so that an edited model re-traces only the
layers the edit changed (a frontend re-summarises on every edit).

A layer's trace depends on its spec (the JSON the user wrote), its input tensor's shape, strides
and dtype, whether that input requires grad, the parameter dtype and whether the layer is frozen
(``trainable``, its own or a container's); the key holds all of these.
The value is what the trace found: the inferred spec, the output tensor's metadata, the forward
FLOPs, the composites whose FLOPs torch misses, and the module as built (a prototype). A hit
runs nothing on meta: the module is a copy of the prototype (copying a module's structure costs
a tenth of building it, which runs its initialisation through the dispatcher) and the output a
fresh meta tensor of the same metadata.

A container's entry is its inferred spec and output: found, it neither re-infers nor combines
(its children are visited, and found, as ever). A tied layer (``tie_weight``) is not kept: its
module holds its owner's weight. The memory passes (layers/analysis/memory.py) are not kept
either: they run the whole model's modules, copies included, once per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layers.language.base import LayerSpec

# A rough Python-object cost of a prototype's parts, for the byte bound (a meta tensor holds no data).
MODULE_BYTES = 2048
TENSOR_BYTES = 512


def layer_key(spec: LayerSpec, x: torch.Tensor, param_dtype: torch.dtype, frozen: bool) -> str:
    """Everything a layer's trace depends on, as one string (a container's spec holds its children's;
    ``frozen``: by its own ``trainable`` or a container's around it)."""
    meta = f"{list(x.shape)}|{list(x.stride())}|{x.dtype}|{x.requires_grad}|{param_dtype}|{frozen}"
    return f"{spec.model_dump_json()}|{meta}"


@dataclass(frozen=True)
class TracedOutput:
    """What the trace found for one layer at one input: its inferred spec and its output's
    metadata. A container's entry is this; its children have their own."""

    spec: LayerSpec  # inferred: every size set
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool

    def output(self) -> torch.Tensor:
        """A new meta tensor like the traced output: same shape, strides and dtype; when that
        required grad, one with a ``grad_fn`` (not a leaf), as a layer's output has. Call it,
        as ``TracedLeaf.module``, with no dispatch mode on (``_disable_current_modes``)."""
        if not self.requires_grad:
            return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device="meta")
        return _Output.apply(_ANCHOR, self)

    def nbytes(self, key: str) -> int:
        return len(key) + len(self.spec.model_dump_json()) + TENSOR_BYTES


def output_of(spec: LayerSpec, out: torch.Tensor) -> TracedOutput:
    return TracedOutput(spec, tuple(out.shape), out.stride(), out.dtype, out.requires_grad)


@dataclass(frozen=True)
class TracedLeaf(TracedOutput):
    """A leaf layer's entry: also its module as built (never handed out, only copied), its
    forward FLOPs and the composites in it whose FLOPs torch misses."""

    prototype: nn.Module
    flops: int
    uncounted: frozenset[str]

    @classmethod
    def of(
        cls, spec: LayerSpec, module: nn.Module, out: torch.Tensor, flops: int, uncounted: set[str]
    ) -> TracedLeaf:
        meta = (tuple(out.shape), out.stride(), out.dtype, out.requires_grad)
        return cls(spec, *meta, copy_module(module), flops, frozenset(uncounted))

    def module(self) -> nn.Module:
        return copy_module(self.prototype)

    def nbytes(self, key: str) -> int:
        modules = sum(1 for _ in self.prototype.modules())
        tensors = sum(1 for _ in self.prototype.parameters()) + sum(1 for _ in self.prototype.buffers())
        return super().nbytes(key) + modules * MODULE_BYTES + tensors * TENSOR_BYTES


_ANCHOR = torch.empty((), device="meta", requires_grad=True)


class _Output(torch.autograd.Function):
    """Makes a layer's output from its metadata, with a ``grad_fn`` (never run backward: the
    memory pass runs the modules themselves)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, meta: TracedOutput) -> torch.Tensor:
        return torch.empty_strided(meta.shape, meta.stride, dtype=meta.dtype, device="meta")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        raise NotImplementedError("a cached trace output is never differentiated")


def copy_module(module: nn.Module, memo: dict[Any, Any] | None = None) -> nn.Module:
    """A copy of a meta module with its own parameters, buffers, submodules and hook tables (a
    pass may add hooks, gradients or a patched ``forward`` to it), sharing the rest; a tensor
    used twice in ``module`` is one tensor in the copy."""
    memo = {} if memo is None else memo
    new = object.__new__(type(module))
    state = {k: v.copy() if type(v) in _TABLES else v for k, v in module.__dict__.items()}
    state["_parameters"] = {k: _copy_tensor(p, memo) for k, p in module._parameters.items()}
    state["_buffers"] = {k: _copy_tensor(b, memo) for k, b in module._buffers.items()}
    state["_modules"] = {k: None if m is None else copy_module(m, memo) for k, m in module._modules.items()}
    new.__dict__ = state
    return new


def _copy_tensor(t: torch.Tensor | None, memo: dict[Any, Any]) -> torch.Tensor | None:
    """A meta tensor like ``t`` on a storage of its own (of the same size, shared where ``t``'s is
    shared in the module): the memory passes tell tensors apart by their storages."""
    if t is None:
        return None
    if id(t) not in memo:
        storage = t.untyped_storage()
        key = ("storage", storage._cdata)
        if key not in memo:
            memo[key] = torch.UntypedStorage(storage.nbytes(), device="meta")
        data = torch.empty((0,), dtype=t.dtype, device="meta")
        data.set_(memo[key], t.storage_offset(), t.shape, t.stride())
        memo[id(t)] = nn.Parameter(data, t.requires_grad) if isinstance(t, nn.Parameter) else data
    return memo[id(t)]


_TABLES = (dict, OrderedDict, list, set)


class TraceCache:
    """Layer keys to what their trace found (``TracedOutput``, ``TracedLeaf``); the least
    recently used are evicted past ``max_bytes``; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[TracedOutput, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> TracedOutput | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, found: TracedOutput) -> None:
        cost = found.nbytes(key)
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size += cost - (old[1] if old else 0)
            self._items[key] = (found, cost)
            while self.size > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.size -= evicted

    def __len__(self) -> int:
        return len(self._items)
