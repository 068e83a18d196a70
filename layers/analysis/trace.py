"""Build a model from its spec on the meta device, layer by layer, inferring sizes as it goes.

Each layer's module is constructed on ``meta`` (no memory), run on a meta tensor to learn its
output shape and FLOPs, and its inferred spec is kept. Nothing real is ever allocated.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from layers.analysis.budget import BudgetExceeded, BudgetMode, TraceBudget, TraceCancelled
from layers.language.base import ContainerSpec, LayerSpec, Shape, shape_str
from layers.language.build import Builder, join
from layers.language.errors import LimitError, Loc, NamingError, ShapeError, SpecError
from layers.language.model import ModelSpec

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
    output: torch.Tensor | None = None  # set once the layer is traced
    module: nn.Module | None = None
    flops: int = 0
    children: list[TracedLayer] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)  # own parameter -> module path of its owner
    repeat: tuple[int, int] | None = None  # (copy, times) of the innermost Repeat around it

    @property
    def output_shape(self) -> Shape:
        return () if self.output is None else tuple(self.output.shape)


@dataclass
class TracedModel:
    spec: ModelSpec  # every size filled in
    module: nn.Sequential  # on the meta device
    layers: list[TracedLayer]  # every node, in forward (pre-)order
    input_shape: Shape
    output_shape: Shape
    param_dtype: torch.dtype
    flops: int
    uncounted_ops: list[str] = field(default_factory=list)  # composites whose FLOPs torch misses
    input_dtype: torch.dtype = torch.float32


def param_dtype_for(input_dtype: torch.dtype) -> torch.dtype:
    """Parameters follow a floating input's dtype; integer inputs (token ids) get float32."""
    return input_dtype if input_dtype.is_floating_point else torch.float32


def trace_model(
    spec: ModelSpec,
    input_shape: Shape,
    input_dtype: InputDType = "float32",
    time_budget_s: float | None = None,
    cancelled: threading.Event | None = None,
) -> TracedModel:
    """Build ``spec`` on meta for an input of ``input_shape``; raise ``SpecError`` naming the layer.

    With ``time_budget_s`` (CPU seconds of this thread), a trace running past it stops at the
    next operator with a ``LimitError`` naming the layer; once ``cancelled`` is set it stops with
    ``TraceCancelled`` (layers/analysis/budget.py). A failure inside our own layer code (not torch
    refusing the input) is raised as it is: a bug, not the user's mistake.
    """
    dtype = DTYPES[input_dtype]
    tracer = _Tracer(tuple(input_shape), param_dtype_for(dtype), TraceBudget(time_budget_s, cancelled))
    x = torch.empty(input_shape, dtype=dtype, device="meta")
    with BudgetMode(tracer.budget) as mode:
        specs, module, out, flops = tracer.trace_sequence(spec.layers, x, ("layers",), "", 0)
    return TracedModel(
        spec=spec.model_copy(update={"layers": specs}),
        module=module,
        layers=tracer.nodes,
        input_shape=tuple(input_shape),
        output_shape=tuple(out.shape),
        param_dtype=tracer.param_dtype,
        flops=flops,
        uncounted_ops=sorted(mode.uncounted),
        input_dtype=dtype,
    )


class _Tracer(Builder):
    """The build walk (``layers.language.build``) with size inference and meta shapes around each step."""

    def __init__(self, input_shape: Shape, param_dtype: torch.dtype, budget: TraceBudget) -> None:
        super().__init__(param_dtype)
        self.input_shape = input_shape
        self.param_dtype: torch.dtype = param_dtype
        self.budget = budget
        self.nodes: list[TracedLayer] = []

    def trace_sequence(
        self, specs: list[LayerSpec], x: torch.Tensor, loc: Loc, path: str, depth: int
    ) -> tuple[list[LayerSpec], nn.Sequential, torch.Tensor, int]:
        inferred, modules, total = [], [], 0
        for i, spec in enumerate(specs):
            node = self.trace_layer(spec, x, (*loc, i), join(path, i), depth)
            inferred.append(node.spec)
            modules.append(node.module)
            total += node.flops
            x = node.output
        return inferred, nn.Sequential(*modules), x, total

    def trace_layer(self, spec: LayerSpec, x: torch.Tensor, loc: Loc, path: str, depth: int) -> TracedLayer:
        self.check_time(loc, path, spec)
        node = TracedLayer(loc=loc, path=path, depth=depth, spec=spec, input_shape=tuple(x.shape))
        self.nodes.append(node)
        with self.located(node):
            self.claim(spec, path)
        if isinstance(spec, ContainerSpec):
            out = self.trace_container(node, spec, x)
        else:
            with self.located(node):
                node.spec = spec.infer(tuple(x.shape))
                with torch.device("meta"):
                    node.module = self.leaf(node.spec, path)
                node.tied = self.tied.get(path, {})
                out, node.flops = node.spec.trace(node.module, x)
        node.output = out
        return node

    def trace_container(self, node: TracedLayer, spec: ContainerSpec, x: torch.Tensor) -> torch.Tensor:
        sequences = spec.sequences()
        inferred, modules, outputs = [], [], []
        with self.copying(spec):
            # A Repeat's copies are alike: trace the first, check it keeps the shape, build the others.
            for sub_loc, prefix, specs in sequences[:1] if spec.copies else sequences:
                first_child = len(self.nodes)
                seq_specs, module, out, flops = self.trace_sequence(
                    specs,
                    x,
                    (*node.loc, *sub_loc),
                    join(node.path, prefix) if prefix else node.path,
                    node.depth + 1,
                )
                node.children += [n for n in self.nodes[first_child:] if n.depth == node.depth + 1]
                inferred.append(seq_specs)
                modules.append(module)
                outputs.append(out)
                node.flops += flops
            node.spec = spec.with_sequences(inferred)
            if spec.copies:
                with self.located(node):
                    spec.combine(x, outputs)
                modules += self.build_copies(node, sequences, inferred[0], first_child)
                node.flops *= len(sequences)
        with self.located(node):
            node.module = self.container(node.spec, modules)
            return node.spec.combine(x, outputs)

    def build_copies(
        self,
        node: TracedLayer,
        sequences: list[tuple[Loc, str, list[LayerSpec]]],
        block: list[LayerSpec],
        first_child: int,
    ) -> list[nn.Sequential]:
        """Build copies 1.. of a traced copy 0 on meta, with copy 0's nodes (shapes, FLOPs) as theirs."""
        traced = self.nodes[first_child:]
        times = len(sequences)
        direct = {id(n) for n in traced if n.repeat is None}  # not inside an inner Repeat
        for n in traced:
            n.repeat = n.repeat or (0, times)
        first_prefix = join(node.path, sequences[0][1])
        modules = []
        for copy, (sub_loc, prefix, _) in enumerate(sequences[1:], start=1):
            self.check_time(node.loc, node.path, node.spec)
            copy_path = join(node.path, prefix)
            with torch.device("meta"):
                module = self.sequence(block, (*node.loc, *sub_loc), copy_path)
            modules.append(module)
            mapped: dict[int, TracedLayer] = {}
            for n in traced:
                relative = n.path[len(first_prefix) + 1 :]
                path = join(copy_path, relative)
                twin = TracedLayer(
                    loc=n.loc,
                    path=path,
                    depth=n.depth,
                    spec=n.spec,
                    input_shape=n.input_shape,
                    output=n.output,
                    module=module.get_submodule(relative),
                    flops=n.flops,
                    tied=self.tied.get(path, {}),
                    repeat=(copy, times) if id(n) in direct else n.repeat,
                )
                mapped[id(n)] = twin
                self.nodes.append(twin)
            for n in traced:
                mapped[id(n)].children = [mapped[id(child)] for child in n.children]
            node.children += [mapped[id(n)] for n in traced if n.depth == node.depth + 1]
        return modules

    def check_time(self, loc: Loc, path: str, spec: LayerSpec) -> None:
        """Between layers (a layer whose trace runs no operator is not checked inside)."""
        try:
            self.budget.check()
        except BudgetExceeded as e:
            raise self.over_budget(loc, spec, path, "before") from e

    @contextmanager
    def located(self, node: TracedLayer) -> Iterator[None]:
        """Turns the user's errors inside one layer into a ``SpecError`` that names that layer:
        ours (a ``SpecError``) and torch refusing the layer. Anything else is a bug of ours and
        goes on as it is, noting the layer."""
        try:
            yield
        except TraceCancelled:
            raise
        except BudgetExceeded as exc:
            raise self.over_budget(node.loc, node.spec, node.path, "in") from exc
        except Exception as exc:
            if isinstance(exc, SpecError) or _raised_by_torch(exc):
                raise self.locate(node, exc) from exc
            exc.add_note(f"while tracing {node.spec.type} at module path '{node.path}'")
            raise

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
