"""The trace budget: CPU time, and a client that has gone; checked at every operator when the
trace runs in the API process.

A layer is one call into PyTorch, and one call can be long: a meta ``Bilinear`` with 10^6
output features runs ``aten::_trilinear``, whose C++ kernel makes millions of calls into other
operators. ``BudgetMode`` is a ``TorchDispatchMode`` that checks the clock and the cancel flag
before every operator. An operator with no meta kernel of its own (a composite, like
``_trilinear``) is run with the mode still on, so the operators inside it are checked too; the
ones among those that FLOP counting has a formula for mark the composite as uncounted.

In a trace worker (``app.core.trace_pool``) the API enforces the budget from outside, by killing
the worker: there the budget is checked between layers only, and ``OperatorMode`` runs composites
as torch does (one C++ call), noting those FLOP counting has no formula for. ``BudgetMode`` is on
for the whole trace (building a module included); ``OperatorMode`` is the FLOP counter of each
layer's forward, where composites run, so one mode per forward both counts and notes (on for the
whole trace, a noting mode cost a warm ResNet-50 summary at batch 1 15% of its CPU time, passing on
the operators of every module's initialisation). Bilinear(8100) at
[1, 1] traces in 6.6 s of CPU under ``BudgetMode`` and 0.44 s under a mode that only passes each
operator on (bench/README.md), so the per-operator check is kept where nothing else bounds a layer.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from layers.language.flops import FlopCounter

_META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)


class BudgetExceeded(Exception):
    """The trace ran past its CPU-time budget (the tracer names the layer it stopped in)."""

    def __init__(self, budget_s: float) -> None:
        super().__init__(f"tracing took more than {budget_s:g} s of CPU time")
        self.budget_s = budget_s


class TraceCancelled(Exception):
    """The trace was stopped from outside (its client disconnected)."""


class TraceBudget:
    """CPU time of the tracing thread (not wall time: waiting for the GIL under load does not
    count) and an optional cancel flag. ``per_operator=False``: checked between layers only, for
    a trace whose process is bounded from outside (a trace worker)."""

    def __init__(
        self, seconds: float | None, cancelled: threading.Event | None = None, per_operator: bool = True
    ) -> None:
        self.seconds = seconds
        self.per_operator = per_operator
        self.deadline = None if seconds is None else time.thread_time() + seconds
        self.cancelled = cancelled

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled.is_set():
            raise TraceCancelled("the client went away")
        if self.deadline is not None and time.thread_time() > self.deadline:
            raise BudgetExceeded(self.seconds)


@functools.cache
def _has_meta_kernel(func: torch._ops.OpOverload) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "Meta")


@functools.cache
def _maybe_uncounted(func: torch._ops.OpOverload) -> bool:
    no_work = func.is_view or torch.Tag.pointwise in func.tags
    return not no_work and not _has_meta_kernel(func)


class OperatorMode(FlopCounter):
    """No check: the FLOP counter of each layer's forward, which also notes the composites (no
    meta kernel of their own) that FLOP counting has no formula for, running each as one call.
    Views and pointwise composites (clone) do no matrix work, so they are not noted: the same list
    ``BudgetMode`` finds, without looking inside. ``BudgetMode``'s interface, for a trace bounded
    from outside."""

    whole_trace = False  # entered around each layer's forward only, as its FLOP counter

    def __init__(self, budget: TraceBudget) -> None:
        super().__init__()
        self.budget = budget
        self.uncounted: set[str] = set()

    def not_counted(self, func: torch._ops.OpOverload, args: tuple) -> None:
        if _maybe_uncounted(func) and _all_meta(args):
            self.uncounted.add(str(func._overloadpacket))


class BudgetMode(TorchDispatchMode):
    """Checks ``budget`` before every operator run under it; records uncounted composites."""

    whole_trace = True  # entered around the whole trace: building a module is checked too

    def __init__(self, budget: TraceBudget) -> None:
        super().__init__()
        self.budget = budget
        self.uncounted: set[str] = set()  # composites whose inner FLOPs torch's counter misses
        self._inside: list[Any] = []  # the composites being run, innermost last
        self._counted_inside = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.budget.check()
        kwargs = kwargs or {}
        if func._overloadpacket in flop_registry:
            self._counted_inside = True
        if _has_meta_kernel(func) or func in self._inside or not _all_meta(args):
            return func(*args, **kwargs)
        # A composite: run its kernel below this mode, with the mode on for what it calls.
        outer_counted, self._counted_inside = self._counted_inside, False
        self._inside.append(func)
        try:
            with self:
                return func.redispatch(_META, *args, **kwargs)
        finally:
            self._inside.pop()
            if self._counted_inside and func._overloadpacket not in flop_registry:
                self.uncounted.add(str(func._overloadpacket))
            self._counted_inside = outer_counted or self._counted_inside


def mode_for(budget: TraceBudget | None) -> BudgetMode | OperatorMode:
    """The mode a trace runs under: per operator unless bounded from outside (or unbounded)."""
    budget = budget or TraceBudget(None, per_operator=False)
    return BudgetMode(budget) if budget.per_operator else OperatorMode(budget)


def _all_meta(args: tuple) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return bool(tensors) and all(t.is_meta for t in tensors)
