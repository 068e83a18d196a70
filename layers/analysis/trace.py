"""The trace: the build pass over the spec (``layers.language.walk``) on the meta device, layer by
layer, inferring sizes as it goes.

Each layer's module is constructed on ``meta`` (no memory), run on a meta tensor to learn its
output shape and FLOPs, and its inferred spec is kept. Nothing real is ever allocated.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from layers.analysis.budget import (
    BudgetExceeded,
    BudgetMode,
    OperatorMode,
    TraceBudget,
    TraceCancelled,
    mode_for,
)
from layers.analysis.cache import TraceCache, TracedLeaf, TracedOutput, layer_key, output_of
from layers.language.base import ContainerSpec, LayerSpec, Shape, shape_str
from layers.language.build import Builder
from layers.language.errors import LimitError, Loc, NamingError, ShapeError, SpecError
from layers.language.flops import FlopCounter
from layers.language.graph import GraphSpec
from layers.language.model import ModelSpec
from layers.language.walk import Node

InputDType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}
MAX_TRACED_IN_MESSAGE = 8
TORCH_DIR = torch.__file__.rsplit("/", 1)[0] + "/"


@dataclass
class TracedLayer:
    """One node of the spec tree after tracing: its inferred spec, module and shapes."""

    loc: Loc
    path: str
    depth: int
    spec: LayerSpec
    input_shape: Shape
    # Set once the layer is traced; a tuple for a layer returning several tensors (graph nodes only).
    output: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    module: nn.Module | None = None
    flops: int = 0
    children: list[TracedLayer] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)  # own parameter -> module path of its owner
    repeat: tuple[int, int] | None = None  # (copy, times) of the innermost Repeat around it
    # A graph's own nodes: the shapes of each input (input/inputs, then tensor args).
    input_shapes: list[Shape] | None = None

    @property
    def outputs(self) -> tuple[torch.Tensor, ...]:
        """Each tensor the layer returns (none before it is traced)."""
        if self.output is None:
            return ()
        return self.output if isinstance(self.output, tuple) else (self.output,)

    @property
    def output_shape(self) -> Shape:
        """The shape of its (first) output."""
        return tuple(self.outputs[0].shape) if self.outputs else ()


@dataclass
class TracedModel:
    spec: ModelSpec | GraphSpec  # every size filled in
    module: nn.Module  # on the meta device: an nn.Sequential, or a GraphModule

    layers: list[TracedLayer]  # every node, in forward (pre-)order
    input_shape: Shape
    output_shape: Shape
    param_dtype: torch.dtype
    flops: int
    uncounted_ops: list[str] = field(default_factory=list)  # composites whose FLOPs torch misses
    input_dtype: torch.dtype = torch.float32
    graph: TracedGraph | None = None  # the graph form's inputs, outputs and edges; None for a sequence


@dataclass
class Edge:
    source: str  # a graph input or a node's ref ("enc", "sp.1")
    target: str  # the node
    arg: str  # where it goes: "input", "inputs.0", or a tensor argument's name ("memory")


@dataclass
class TracedGraph:
    inputs: dict[str, torch.Tensor]  # meta tensors, by input name
    outputs: dict[str, tuple[str, torch.Tensor]]  # by output name: (ref, meta tensor)
    edges: list[Edge]


def param_dtype_for(input_dtype: torch.dtype) -> torch.dtype:
    """Parameters follow a floating input's dtype; integer inputs (token ids) get float32."""
    return input_dtype if input_dtype.is_floating_point else torch.float32


def trace_model(
    spec: ModelSpec,
    input_shape: Shape,
    input_dtype: InputDType = "float32",
    budget: TraceBudget | None = None,
    cache: TraceCache | None = None,
) -> TracedModel:
    """Build ``spec`` on meta for an input of ``input_shape``; raise ``SpecError`` naming the layer.

    Under a ``budget`` (CPU seconds of this thread, a cancel flag: layers/analysis/budget.py), a
    trace running past it stops at the next operator with a ``LimitError`` naming the layer, and
    once cancelled with ``TraceCancelled``. A failure inside our own layer code (not torch
    refusing the input) is raised as it is: a bug, not the user's mistake.

    With a ``cache`` (layers/analysis/cache.py), a leaf layer traced before at the same input is
    not run again: the answer is the same, made faster.
    """
    dtype = DTYPES[input_dtype]
    mode = mode_for(budget)
    tracer = _Tracer(tuple(input_shape), param_dtype_for(dtype), mode, cache)
    x = torch.empty(input_shape, dtype=dtype, device="meta")
    with whole_trace(mode):
        layers, out = tracer.model(spec.layers, x)
    return TracedModel(
        spec=spec.model_copy(update={"layers": [node.spec for node in layers]}),
        module=nn.Sequential(*(node.module for node in layers)),
        layers=tracer.nodes,
        input_shape=tuple(input_shape),
        output_shape=tuple(out.shape),
        param_dtype=tracer.param_dtype,
        flops=sum(node.flops for node in layers),
        uncounted_ops=sorted(mode.uncounted),
        input_dtype=dtype,
    )


class _Tracer(Builder):
    """The build pass (``layers.language.build``) with size inference and meta shapes around each
    step. A node of a Repeat's later copy is built like its twin in the first copy, whose spec,
    shapes and FLOPs it has: the copies are alike, so only the first is run.

    With a cache, a leaf found there (or whose twin was) is not run: its module is a copy of the
    cached one (``make``) and its output a tensor like the cached one."""

    def __init__(
        self,
        input_shape: Shape,
        param_dtype: torch.dtype,
        mode: BudgetMode | OperatorMode,
        cache: TraceCache | None,
    ) -> None:
        super().__init__(param_dtype)
        self.input_shape = input_shape
        self.param_dtype: torch.dtype = param_dtype
        self.mode = mode
        self.budget = mode.budget
        # Each layer's forward runs under the counter: the mode itself unless it is on for the
        # whole trace already (there it notes the composites; the counter only counts).
        self.counter = mode if isinstance(mode, FlopCounter) else FlopCounter()
        self.cache = (
            cache if cache is not None and cache.max_bytes > 0 else None
        )  # 0: keys, copies for nothing
        self.nodes: list[TracedLayer] = []  # in forward (pre-)order
        self.traced: dict[str, TracedLayer] = {}  # by module path
        self.keys: dict[str, str] = {}  # by module path, with a cache: what the layer's trace depends on
        self.found: dict[str, TracedOutput] = {}  # by module path: the layers found in the cache

    def enter(self, node: Node, x: torch.Tensor) -> None:
        self.check_time(node.loc, node.path, node.spec)
        traced = TracedLayer(node.loc, node.path, node.depth, node.spec, tuple(x.shape), repeat=node.repeat)
        self.nodes.append(traced)
        self.traced[node.path] = traced
        if self.cache is None:
            return
        found = None
        if node.twin is None:
            key = self.keys[node.path] = layer_key(node.spec, x, self.param_dtype, node.frozen)
            found = self.cache.get(key)
        else:  # its twin's entry, if any: a leaf's module is copied from it
            found = self.found.get(node.twin)
        if found is not None:
            self.found[node.path] = found

    def leaf(self, node: Node, x: torch.Tensor) -> TracedLayer:
        node.spec.check_tensor_args(self.tensors(node.spec))  # in a sequence, none
        traced = self.traced[node.path]
        twin = None if node.twin is None else self.traced[node.twin]
        found = self.found.get(node.path)
        if isinstance(found, TracedLeaf):
            with _disable_current_modes():  # copying a module and making a meta tensor
                traced.spec = found.spec
                traced.module = self.build(node, traced.spec)
                output = twin.output if twin else found.output()
            traced.output, traced.flops = output, found.flops
            self.mode.uncounted |= found.uncounted
        else:
            traced.spec = twin.spec if twin else node.spec.infer(tuple(x.shape))
            with torch.device("meta"):
                traced.module = self.build(node, traced.spec)
            if twin:
                traced.output, traced.flops = twin.output, twin.flops
            else:
                self.run(node, traced, x)
        traced.tied = self.tied.get(node.path, {})
        return traced

    def make(self, node: Node, spec: LayerSpec) -> nn.Module:
        found = self.found.get(node.path)
        return found.module() if isinstance(found, TracedLeaf) else super().make(node, spec)

    def run(self, node: Node, traced: TracedLayer, x: torch.Tensor) -> None:
        """The layer on meta: its output and FLOPs, and the composites in it whose FLOPs torch
        misses; kept in the cache unless the layer is tied (its module holds another's weight)."""
        outer, self.mode.uncounted = self.mode.uncounted, set()
        try:
            assert traced.module is not None
            tensors = self.tensors(traced.spec)
            traced.output, traced.flops = traced.spec.trace(traced.module, x, self.counter, **tensors)
            uncounted = self.mode.uncounted
        finally:
            self.mode.uncounted = outer | self.mode.uncounted
        if self.cache is not None and node.path not in self.tied and isinstance(traced.output, torch.Tensor):
            with _disable_current_modes():
                found = TracedLeaf.of(traced.spec, traced.module, traced.output, traced.flops, uncounted)
            self.cache.put(self.keys[node.path], found)
            self.found[node.path] = found

    def tensors(self, spec: LayerSpec) -> dict[str, torch.Tensor]:
        """The tensor arguments the layer is given by name: none in a sequence (a graph's wires)."""
        return {}

    def made_sequence(self, results: list[TracedLayer]) -> list[TracedLayer]:
        return results

    def first_copy(self, node: Node, x: torch.Tensor, out: torch.Tensor) -> None:
        assert isinstance(node.spec, ContainerSpec)
        if node.path not in self.found:  # a container found in the cache combined this input before
            node.spec.combine(x, [out])  # before the other copies are built

    def container(
        self, node: Node, x: torch.Tensor, sequences: list[list[TracedLayer]], outputs: list[torch.Tensor]
    ) -> TracedLayer:
        traced = self.traced[node.path]
        twin = None if node.twin is None else self.traced[node.twin]
        found = None if twin else self.found.get(node.path)
        traced.children = [child for sequence in sequences for child in sequence]
        traced.flops = sum(child.flops for child in traced.children)
        assert isinstance(node.spec, ContainerSpec)
        if twin or found:
            spec = (twin or found).spec
        else:
            spec = node.spec.with_sequences([[c.spec for c in seq] for seq in sequences])
        assert isinstance(spec, ContainerSpec)
        traced.spec = spec
        modules = [nn.Sequential(*(child.module for child in sequence)) for sequence in sequences]
        traced.module = self.assemble(node, spec, modules)
        if twin:
            traced.output = twin.output
        elif found:
            with _disable_current_modes():
                traced.output = found.output()
        else:
            traced.output = spec.combine(x, outputs)
            if self.cache is not None:
                self.cache.put(self.keys[node.path], output_of(spec, traced.output))
        return traced

    def output(self, result: TracedLayer) -> torch.Tensor:
        if isinstance(result.output, tuple):  # a layer returning several tensors (an LSTM's state)
            names = result.spec.returns()
            what = f" ({', '.join(names)})" if names else ""
            error = ShapeError(
                (),
                f"it returns {len(result.output)} tensors{what}, and a layer sequence passes on one; "
                f"use it as a node of a graph, whose outputs are 'name.0' to 'name.{len(result.output) - 1}'",
                {"expected": 1, "got": len(result.output)},
            )
            raise self.locate(result, error)
        return result.output

    def check_time(self, loc: Loc, path: str, spec: LayerSpec) -> None:
        """Between layers (a layer whose trace runs no operator is not checked inside)."""
        try:
            self.budget.check()
        except BudgetExceeded as e:
            raise self.over_budget(loc, spec, path, "before") from e

    def failed(self, node: Node, exc: Exception) -> Exception:
        """The user's errors inside one layer become a ``SpecError`` that names that layer: ours
        (a ``SpecError``) and torch refusing the layer. Anything else is a bug of ours and goes on
        as it is, noting the layer."""
        if isinstance(exc, TraceCancelled):
            return exc
        traced = self.traced[node.path]
        if isinstance(exc, BudgetExceeded):
            return self.over_budget(node.loc, traced.spec, node.path, "in")
        if isinstance(exc, SpecError) or _raised_by_torch(exc):
            return self.locate(traced, exc)
        exc.add_note(f"while tracing {traced.spec.type} at module path '{node.path}'")
        return exc

    def over_budget(self, loc: Loc, spec: LayerSpec, path: str, where: str) -> LimitError:
        limit = self.budget.seconds
        return LimitError(
            loc,
            f"tracing the model took more than {limit:g} s of CPU time; it stopped {where} this "
            f"{spec.type} (module path '{path}'). Use fewer or smaller layers",
            {"limit_s": limit, "layers_traced": len([n for n in self.nodes if n.output is not None])},
        )

    def traced_so_far(self) -> list[dict]:
        done = [n for n in self.nodes if n.output is not None]
        return [{"path": n.path, "type": n.spec.type, "output_shape": list(n.output_shape)} for n in done]

    def locate(self, node: TracedLayer, exc: Exception) -> SpecError:
        if isinstance(exc, NamingError):  # about the spec, not the input: no trace to show
            where = f"{node.spec.type} at module path '{node.path}'"
            return NamingError((*node.loc, *exc.loc), f"{where}: {exc.msg}", {**exc.ctx, "path": node.path})
        traced = self.traced_so_far()
        if isinstance(exc, SpecError):
            loc, reason, ctx, cls = (*node.loc, *exc.loc), exc.msg, dict(exc.ctx), type(exc)
        else:  # torch refused the layer: its own message names the sizes
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            loc, ctx, cls = node.loc, {}, ShapeError
        steps = [f"input {shape_str(self.input_shape)}"] + [
            f"{t['path']} {t['type']} {shape_str(t['output_shape'])}" for t in traced
        ]
        if len(steps) > MAX_TRACED_IN_MESSAGE:
            steps = [steps[0], "...", *steps[-(MAX_TRACED_IN_MESSAGE - 1) :]]
        msg = (
            f"{node.spec.type} at module path '{node.path}' cannot take input "
            f"{shape_str(node.input_shape)}: {reason}. Traced so far: {' -> '.join(steps)}"
        )
        ctx.update(layer=node.spec.type, path=node.path, input_shape=list(node.input_shape), traced=traced)
        return cls(loc, msg, ctx)


def whole_trace(mode: BudgetMode | OperatorMode) -> AbstractContextManager:
    """``mode`` when it is on for the whole trace; else nothing (it is on around each forward)."""
    return mode if mode.whole_trace else nullcontext()


def _raised_by_torch(exc: BaseException) -> bool:
    """Whether torch raised ``exc`` (its innermost frame is in torch's package): torch refusing
    what it was given. With ``BudgetMode`` on, every operator's own error is raised from torch's
    Python dispatch code, so this also holds for errors from C++ kernels."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(TORCH_DIR)
