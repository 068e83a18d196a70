"""Training and inference memory of a traced model, measured with torch's own machinery on meta.

Three passes over the traced model's meta module, nothing allocated:

- **saved**: one forward under ``saved_tensors_hooks``; each storage autograd keeps for backward
  is counted once (parameters and buffers apart), and attributed to the layer that saved it.
  This is exact against real CPU tensors (tests/test_memory.py), where ``MemTracker`` under
  ``FakeTensorMode`` reports a different quantity (activations at the peak, inside backward).
- **training**: two training steps (forward, a stand-in loss, backward, optimizer step,
  ``zero_grad``) under a dispatch mode that keeps the live bytes of every storage (freed when
  torch frees it) and their peak. Two steps, because the optimizer state appears in the first.
  ``MemTracker`` measures the same peak, but took 32 s for a 7B transformer where this takes a
  few (bench/memory_estimate.py).
- **inference**: one forward under ``no_grad`` in the same mode.

Recurrent kernels are opaque: CPU runs oneDNN for LSTM, whose workspace is invisible on meta
(its meta kernel returns an empty one). A recurrent layer is therefore measured on a small real
CPU instance of itself (same sizes, batch up to 32, 8 and 16 steps) and scaled linearly in steps
and batch; in the meta passes it is replaced by an autograd function that keeps exactly that
many bytes for backward.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from layers.analysis.attention import Device, device_attention
from layers.analysis.budget import BudgetExceeded, TraceBudget
from layers.analysis.trace import TracedModel
from layers.catalog import recurrent
from layers.language.errors import LimitError, Loc
from layers.language.io import SEQUENCE_INPUT, run
from layers.training.optimizers import OptimizerSpec

# A recurrent layer is measured for real at up to this batch and at these step counts.
MEASURE_BATCH = 32
MEASURE_STEPS = (8, 16)
# Above this many bytes of weights a real measurement would cost too much: the meta decomposition
# is scaled instead, and the estimate says so.
MEASURE_MAX_PARAM_BYTES = 64 << 20


Phase = Literal["forward", "backward", "optimizer step"]


@dataclass(frozen=True)
class MemoryBreakdown:
    """The parts of the training peak (described in ``app.schemas.summary.MemoryBreakdown``)."""

    parameters: int
    buffers: int
    gradients: int
    optimizer_state: int
    activations: int  # bytes autograd holds for backward when the forward ends
    temporary: int  # the rest of the peak; negative when it comes where not all of the above coexist


@dataclass(frozen=True)
class TrainingMemory:
    training_peak_bytes: int  # once the optimizer state exists
    peak_phase: Phase
    breakdown: MemoryBreakdown
    inference_peak_bytes: int  # 0 when not estimated
    optimizer: str
    device: Device
    notes: list[str]  # how layers torch cannot see into were measured


@dataclass
class MemoryEstimate:
    memory: TrainingMemory
    saved_by_path: dict[str, int]  # bytes saved for backward under each layer, children included
    backward_flops: int
    # The steady-state step's live bytes after each operator (the training peak is the largest):
    # each is affine in the batch for almost every model (layers/analysis/fit.py).
    timeline: list[int] = field(default_factory=list)


def estimate_memory(
    traced: TracedModel,
    optimizer: OptimizerSpec,
    device: Device = "cuda",
    batch_size: int | None = None,
    budget: TraceBudget | None = None,
    inference: bool = True,
) -> MemoryEstimate:
    """Training memory of ``traced`` with ``optimizer``, at its input shape or at ``batch_size``.

    Past ``budget`` a ``LimitError`` names the layer running then (once it is cancelled,
    ``TraceCancelled``). ``inference=False`` skips the inference pass (``inference_peak_bytes`` is 0).
    """
    batch = batch_size or traced.input_shape[0]
    module = traced.module
    clock = _Clock(budget or TraceBudget(None))
    clock.where = (traced.layers[0].loc, traced.layers[0].path)  # until the first layer runs
    paths = {id(node.module): (node.loc, node.path) for node in traced.layers if node.module is not None}
    params = list(module.parameters())
    buffers = list(module.buffers())
    try:
        with _recurrent_measured(module) as (notes, recurrent_flops), _averaging_factor_on_meta(module):
            step = _training_pass(module, batch, traced, optimizer, device, paths, clock)
            inference = _inference_pass(module, batch, traced, device, clock) if inference else 0
    finally:
        for p in params:
            p.grad = None
    parameters, buffer_bytes = storage_bytes(params), storage_bytes(buffers)
    named = parameters + buffer_bytes + step.gradients + step.optimizer_state + step.saved
    breakdown = MemoryBreakdown(
        parameters=parameters,
        buffers=buffer_bytes,
        gradients=step.gradients,
        optimizer_state=step.optimizer_state,
        activations=step.saved,
        temporary=step.peak - named,
    )
    memory = TrainingMemory(
        training_peak_bytes=step.peak,
        peak_phase=step.phase,
        breakdown=breakdown,
        inference_peak_bytes=inference,
        optimizer=optimizer.type,
        device=device,
        notes=notes,
    )
    return MemoryEstimate(
        memory=memory,
        saved_by_path=_subtree_sums(traced, step.own),
        backward_flops=step.flops + sum(recurrent_flops.values()),
        timeline=step.timeline,
    )


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the tensors' storages, each counted once (views and shared tensors share one)."""
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class _Clock:
    """The budget, checked at every operator: past it, a ``LimitError`` at the layer running."""

    def __init__(self, budget: TraceBudget) -> None:
        self.budget = budget
        self.where: tuple[Loc, str] = ((), "")  # the spec loc and module path running now

    def check(self) -> None:
        try:
            self.budget.check()
        except BudgetExceeded as e:
            loc, path = self.where
            raise LimitError(
                loc,
                f"tracing the model and estimating its training memory took more than "
                f"{e.budget_s:g} s of CPU time; it stopped at module path '{path}'. Use fewer or "
                "smaller layers, or a smaller input",
                {"limit_s": e.budget_s, "path": path},
            ) from e


def _inputs(batch: int, traced: TracedModel) -> dict[str, torch.Tensor]:
    """The model's inputs on meta at ``batch`` (dimension 0 of every input of a graph)."""
    if traced.graph is None:
        shape = (batch, *traced.input_shape[1:])
        return {SEQUENCE_INPUT: torch.empty(shape, dtype=traced.input_dtype, device="meta")}
    return {
        name: torch.empty((batch, *t.shape[1:]), dtype=t.dtype, device="meta")
        for name, t in traced.graph.inputs.items()
    }


@contextmanager
def _module_stack(module: nn.Module, paths: dict[int, tuple[Loc, str]], clock: _Clock) -> Iterator[list[str]]:
    """A stack of the module paths running now; each module entered checks the time budget."""
    stack: list[str] = [""]
    handles = []

    def enter(mod: nn.Module, args: Any) -> None:
        clock.where = paths.get(id(mod), clock.where)
        stack.append(clock.where[1])
        clock.check()

    def leave(mod: nn.Module, args: Any, out: Any) -> None:
        stack.pop()

    for sub in module.modules():
        if id(sub) in paths:
            handles.append(sub.register_forward_pre_hook(enter))
            handles.append(sub.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _subtree_sums(traced: TracedModel, own: dict[str, int]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for node in reversed(traced.layers):  # pre-order reversed: children before their parents
        sums[node.path] = own.get(node.path, 0) + sum(sums[c.path] for c in node.children)
    return sums


class _LiveBytes(TorchDispatchMode):
    """Live bytes of every storage an operator returns, until torch frees it, and their peak."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.phase = "forward"
        self.peaks: dict[str, int] = {}  # phase -> the running peak when that phase last raised it
        self.timeline: list[int] = []  # the live bytes after each operator
        self.clock = clock
        self._tracked: dict[int, weakref.ref] = {}
        # FLOPs by FlopCounterMode's own formulas, counted here: FlopCounterMode itself, nested,
        # keeps tensors alive for its module tracking and would inflate the peak it runs under.
        self.count_flops = False
        self.flops = 0

    def track(self, tensors: list[torch.Tensor]) -> None:
        for t in tensors:
            self._add(t)
        self._mark()

    def _add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._tracked:
            return
        nbytes = storage.nbytes()
        self.live += nbytes
        self._tracked[key] = weakref.ref(storage, lambda _, k=key, n=nbytes: self._free(k, n))

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.pop(key, None)

    def _mark(self) -> None:
        self.timeline.append(self.live)
        if self.live > self.peak:
            self.peak = self.live
            self.peaks[self.phase] = self.live

    def phase_at(self, peak: int) -> str:
        """The phase in which the live bytes first reached ``peak``."""
        return next(phase for phase, value in self.peaks.items() if value == peak)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.clock.check()
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.count_flops and func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                self._add(t)
        self._mark()
        return out


class SavedTensors:
    """Bytes autograd saves for backward while ``recording``: each storage once, ``excluded``
    ones (the model's parameters and buffers) apart, each counted for its ``owner()``."""

    def __init__(self, excluded: Iterable[torch.Tensor], owner: Callable[[], str] = str) -> None:
        self.excluded = {t.untyped_storage()._cdata for t in excluded}
        self.owner = owner
        self.bytes: dict[int, int] = {}  # storage key -> bytes
        self.by_owner: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        # Every saved tensor stays alive until backward, so its storage key stays unique.
        key = t.untyped_storage()._cdata
        if key not in self.excluded and key not in self.bytes:
            self.bytes[key] = nbytes = t.untyped_storage().nbytes()
            owner = self.owner()
            self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes
        return t

    @contextmanager
    def recording(self) -> Iterator[SavedTensors]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, _unpack):
            yield self


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class _Step:
    """What one training step on meta measured."""

    peak: int
    phase: Phase
    saved: int
    own: dict[str, int] = field(default_factory=dict)  # saved bytes by the module path that saved them
    flops: int = 0  # of backward
    gradients: int = 0
    optimizer_state: int = 0
    timeline: list[int] = field(default_factory=list)  # live bytes after each operator, steady state


def _training_pass(
    module: nn.Module,
    batch: int,
    traced: TracedModel,
    spec: OptimizerSpec,
    device: Device,
    paths: dict[int, tuple[Loc, str]],
    clock: _Clock,
) -> _Step:
    """The training step's peak live bytes on meta, what it saved for backward, FLOPs and sizes."""
    params = [p for p in module.parameters() if p.requires_grad]
    # Nothing to train (no parameters, or all frozen): torch refuses an empty optimizer, and the
    # step would change nothing; the estimate is forward and backward with no optimizer state.
    optimizer = spec.build(params) if params else None
    for group in optimizer.param_groups if optimizer is not None else []:
        # What the optimizer picks on that device: CUDA's foreach kernels (a parameter-sized
        # temporary per state op), the CPU's per-parameter loop.
        group["foreach"] = device == "cuda"
    tracker = _LiveBytes(clock)
    x = _inputs(batch, traced)
    with tracker:
        tracker.track([*module.parameters(), *module.buffers(), *x.values()])
        saved = _forward_and_backward(module, x, tracker, paths, clock, device)
        grads = storage_bytes([p.grad for p in params if p.grad is not None])
        before_step, forward_and_backward = tracker.peak, len(tracker.timeline)
        tracker.phase = "optimizer step"
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    state = optimizer_state_bytes(optimizer) if optimizer is not None else 0
    # This was the first step: the optimizer made its state in it. In every later step that
    # state is live through forward and backward too (it never changes size), so their peak is
    # this step's forward-and-backward peak plus the state; the optimizer step itself is alike
    # in every step (the state is made before its kernels run).
    peak, phase = before_step + state, tracker.phase_at(before_step)
    if tracker.peak > peak:
        peak, phase = tracker.peak, "optimizer step"
    timeline = [live + state for live in tracker.timeline[:forward_and_backward]]
    timeline += tracker.timeline[forward_and_backward:]
    return _Step(peak, phase, saved.total, saved.by_owner, tracker.flops, grads, state, timeline)


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def _averaging_factor_on_meta(module: nn.Module) -> Iterator[None]:
    """Batch norms with ``momentum=None`` (a cumulative average) as if they had a momentum.

    Training, such a norm reads its batch count as a Python number (``1 / num_batches_tracked``),
    which no meta tensor holds (it was a 500). The factor only weighs the running statistics: the
    kernels, what they keep and every size are those of any momentum.
    """
    cumulative = [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.momentum is None]
    for norm in cumulative:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm in cumulative:
            norm.momentum = None


def _forward_and_backward(
    module: nn.Module,
    x: dict[str, torch.Tensor],
    tracker: _LiveBytes,
    paths: dict[int, tuple[Loc, str]],
    clock: _Clock,
    device: Device,
) -> SavedTensors:
    """The forward, with what it saves for backward counted per layer, a loss, and the backward."""
    with _module_stack(module, paths, clock) as stack:
        saved = SavedTensors([*module.parameters(), *module.buffers()], lambda: stack[-1])
        with saved.recording(), device_attention(module, device):
            outs = list(run(module, x).values())
    # A stand-in loss: like a real one it keeps and returns output-sized tensors (one per output
    # of a graph, summed).
    loss = None
    for out in outs:
        if out.requires_grad:
            one = out.float().pow(2).mean()
            loss = one if loss is None else loss + one
    del outs, out
    if loss is not None:
        tracker.phase = "backward"
        tracker.count_flops = True
        loss.backward()
        tracker.count_flops = False
    return saved


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (Adam's step counters included)."""
    return storage_bytes(_state_tensors(optimizer))


def _inference_pass(module: nn.Module, batch: int, traced: TracedModel, device: Device, clock: _Clock) -> int:
    tracker = _LiveBytes(clock)
    x = _inputs(batch, traced)
    with torch.no_grad(), tracker, device_attention(module, device):
        tracker.track([*module.parameters(), *module.buffers(), *x.values()])
        run(module, x)
    return tracker.peak


# --- recurrent layers: measured on a small real instance, scaled ---------------------------------


@dataclass(frozen=True)
class _Kept:
    """What a recurrent layer keeps for backward at one (batch, steps)."""

    input: bool  # the input tensor itself
    output: bool  # the returned output itself
    internal: int  # bytes of everything else (workspace, gate values, states, copies)


def saved_on_real(module: nn.Module, x: torch.Tensor) -> tuple[_Kept, torch.Tensor]:
    """What ``module(x)`` keeps for backward, measured with hooks on real tensors."""
    with SavedTensors(module.parameters()).recording() as saved:
        out = module(x)
    in_key, out_key = x.untyped_storage()._cdata, out.untyped_storage()._cdata
    out_bytes = out.numel() * out.element_size()
    kept_input = in_key in saved.bytes
    kept_output = saved.bytes.get(out_key) == out_bytes
    internal = sum(n for k, n in saved.bytes.items() if not (k == in_key or (k == out_key and kept_output)))
    return _Kept(kept_input, kept_output, internal), out


@lru_cache(maxsize=256)
def _measure(kind: str, config: tuple, dtype: torch.dtype, batch: int, steps: int, real: bool) -> _Kept:
    """``_Kept`` of a recurrent layer ``config`` at ``batch`` x ``steps``, on the CPU or on meta."""
    module_class, args = _RECURRENT[kind], dict(config)
    output = args.pop("output")
    device = "cpu" if real else "meta"
    with torch.device(device):
        module = module_class(**args).to(dtype)
    # With its state returned the kernel is the same one: measured as the sequence it returns.
    module.output = "sequence" if output == "sequence_and_state" else output
    time_dim = 1 if args["batch_first"] else 0
    shape = [batch, steps, args["input_size"]] if time_dim else [steps, batch, args["input_size"]]
    x = torch.randn(shape, dtype=dtype) if real else torch.empty(shape, dtype=dtype, device="meta")
    kept, _ = saved_on_real(module, x)
    return kept


_RECURRENT: dict[str, type[nn.Module]] = {"LSTM": recurrent.LSTM, "GRU": recurrent.GRU, "RNN": recurrent.RNN}


def recurrent_config(module: nn.RNNBase) -> tuple:
    keys = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"]
    config = {k: getattr(module, k) for k in keys}
    if module.mode == "LSTM":
        config["proj_size"] = module.proj_size
    if module.mode in ("RNN_TANH", "RNN_RELU"):
        config["nonlinearity"] = module.nonlinearity
    config["output"] = getattr(module, "output", "sequence")
    return tuple(sorted(config.items()))


def kept_by_recurrent(module: nn.RNNBase, batch: int, steps: int) -> tuple[_Kept, str]:
    """What ``module`` keeps for backward at ``batch`` x ``steps``, and how that was found.

    Measured on the CPU at ``min(batch, 32)`` and the exact step count when it is 16 or fewer,
    else at 8 and 16 steps and extrapolated linearly; scaled linearly in batch. Kernels hide
    their workspace (oneDNN's LSTM) and pad it, so this is a measurement, not a formula.
    """
    kind = type(module).__name__
    config = recurrent_config(module)
    dtype = next(module.parameters()).dtype
    real = sum(p.numel() * p.element_size() for p in module.parameters()) <= MEASURE_MAX_PARAM_BYTES
    b = min(batch, MEASURE_BATCH)
    if steps <= MEASURE_STEPS[1]:
        kept = _measure(kind, config, dtype, b, steps, real)
        internal = kept.internal
        at = f"{steps} steps"
    else:
        t0, t1 = MEASURE_STEPS
        k0, k1 = _measure(kind, config, dtype, b, t0, real), _measure(kind, config, dtype, b, t1, real)
        kept = k1
        internal = k1.internal + (k1.internal - k0.internal) * (steps - t1) / (t1 - t0)
        at = f"{t0} and {t1} steps, extrapolated linearly to {steps}"
    internal = math.ceil(internal * batch / b)
    where = (
        "a real CPU instance"
        if real
        else "meta (too large to measure for real: the CPU kernel may keep more)"
    )
    how = f"{kind} ({module.mode}): measured on {where} at batch {b} and {at}, scaled to batch {batch}"
    return _Kept(kept.input, kept.output, internal), how


class _Recurrent(torch.autograd.Function):
    """Stands in for a recurrent layer in the meta passes: its output (and final state, when it
    returns it), and ``internal`` bytes kept."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, shape: tuple, states: tuple, kept: _Kept, *params: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = x.new_empty(shape, dtype=params[0].dtype)
        internal = x.new_empty((kept.internal,), dtype=torch.uint8)
        ctx.save_for_backward(x if kept.input else None, out if kept.output else None, internal)
        ctx.shapes = [x.shape, *(p.shape for p in params)]
        if not states:
            return out
        return (out, *(x.new_empty(state, dtype=params[0].dtype) for state in states))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *state_grads: torch.Tensor) -> tuple:
        x_shape, *param_shapes = ctx.shapes
        needs = ctx.needs_input_grad
        grad_x = grad.new_empty(x_shape) if needs[0] else None
        grads = [grad.new_empty(s) if need else None for s, need in zip(param_shapes, needs[4:], strict=True)]
        return (grad_x, None, None, None, *grads)


@contextmanager
def _recurrent_measured(module: nn.Module) -> Iterator[tuple[list[str], dict[int, int]]]:
    """Replace each recurrent layer's forward by its measured stand-in while the passes run.

    Yields the notes saying how each was measured and each one's backward FLOPs (by module id).
    """
    notes: list[str] = []
    flops: dict[int, int] = {}
    replaced = [sub for sub in module.modules() if isinstance(sub, nn.RNNBase)]
    try:
        for sub in replaced:
            sub.forward = _stand_in(sub, notes, flops)
        yield notes, flops
    finally:
        for sub in replaced:
            sub.__dict__.pop("forward", None)


def _output_shape(module: nn.RNNBase, x: torch.Tensor) -> tuple[int, ...]:
    directions = 2 if module.bidirectional else 1
    features = (getattr(module, "proj_size", 0) or module.hidden_size) * directions
    shape = [*x.shape[:-1], features]
    if getattr(module, "output", "sequence") == "last":
        del shape[1 if module.batch_first and x.dim() == 3 else 0]
    return tuple(shape)


def _state_shapes(module: nn.RNNBase, x: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """The shapes of the final state a recurrent layer returns with ``sequence_and_state``: h_n
    (and an LSTM's c_n), [layers * directions, B, H] ([.., H] unbatched), none otherwise."""
    if getattr(module, "output", "sequence") != "sequence_and_state":
        return ()
    layers = module.num_layers * (2 if module.bidirectional else 1)
    batch = () if x.dim() == 2 else (x.shape[0 if module.batch_first else 1],)
    h_n = (layers, *batch, getattr(module, "proj_size", 0) or module.hidden_size)
    return (h_n, (layers, *batch, module.hidden_size)) if module.mode == "LSTM" else (h_n,)


def _stand_in(module: nn.RNNBase, notes: list[str], flops: dict[int, int]) -> Callable[..., Any]:
    params = [p for p in module.parameters()]

    def forward(x: torch.Tensor, **initial_state: torch.Tensor) -> Any:
        # The initial state (h0, c0) changes no size: the stand-in does not read it.
        shape, states = _output_shape(module, x), _state_shapes(module, x)
        if not torch.is_grad_enabled():
            out = x.new_empty(shape, dtype=params[0].dtype)
            return (out, *(x.new_empty(s, dtype=params[0].dtype) for s in states)) if states else out
        time_dim = 1 if module.batch_first and x.dim() == 3 else 0
        steps = x.shape[time_dim]
        batch = x.shape[1 - time_dim] if x.dim() == 3 else 1
        if id(module) not in flops:
            flops[id(module)] = _one_step_backward_flops(module, x.narrow(time_dim, 0, 1)) * steps
        kept, how = kept_by_recurrent(module, batch, steps)
        if how not in notes:
            notes.append(how)
        return _Recurrent.apply(x, shape, states, kept, *params)

    return forward


def _one_step_backward_flops(module: nn.RNNBase, one: torch.Tensor) -> int:
    """Backward FLOPs of one step on meta (the cost is linear in steps, as the trace counts it)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    # Own (identity) hooks, innermost, so the outer pass does not count this step as saved.
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        out = type(module).forward(module, one.detach())
        out = out[0] if isinstance(out, tuple) else out  # the sequence's gradient, not the state's
        if not trainable or not out.requires_grad:
            return 0
        with FlopCounterMode(display=False) as counter:
            torch.autograd.grad(out, trainable, torch.empty_like(out))
    return counter.get_total_flops()
