"""Build a model from its spec on the meta device, layer by layer, inferring sizes as it goes.

Each layer's module is constructed on ``meta`` (no memory), run on a meta tensor to learn its
output shape and FLOPs, and its inferred spec is kept. Nothing real is ever allocated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from layers.base import ContainerSpec, LayerSpec, Shape, shape_str
from layers.errors import LimitError, Loc, ShapeError, SpecError
from layers.model import ModelSpec

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
    input_dtype: torch.dtype = torch.float32


def param_dtype_for(input_dtype: torch.dtype) -> torch.dtype:
    """Parameters follow a floating input's dtype; integer inputs (token ids) get float32."""
    return input_dtype if input_dtype.is_floating_point else torch.float32


def trace_model(
    spec: ModelSpec,
    input_shape: Shape,
    input_dtype: InputDType = "float32",
    time_budget_s: float | None = None,
) -> TracedModel:
    """Build ``spec`` on meta for an input of ``input_shape``; raise ``SpecError`` naming the layer.

    With ``time_budget_s``, a trace still running past it stops at the next layer with a
    ``LimitError`` (a few deep recurrent layers cost tenths of a second each on meta).
    """
    dtype = DTYPES[input_dtype]
    # CPU time of this thread, not wall time: under concurrent requests a trace waits for the GIL,
    # and a valid model must not be refused because the server is busy.
    deadline = None if time_budget_s is None else time.thread_time() + time_budget_s
    tracer = _Tracer(tuple(input_shape), param_dtype_for(dtype), deadline, time_budget_s)
    x = torch.empty(input_shape, dtype=dtype, device="meta")
    specs, module, out, flops = tracer.sequence(spec.layers, x, ("layers",), "", 0)
    return TracedModel(
        spec=spec.model_copy(update={"layers": specs}),
        module=module,
        layers=tracer.nodes,
        input_shape=tuple(input_shape),
        output_shape=tuple(out.shape),
        param_dtype=tracer.param_dtype,
        flops=flops,
        input_dtype=dtype,
    )


def _join(path: str, name: str | int) -> str:
    return f"{path}.{name}" if path else str(name)


class _Tracer:
    def __init__(
        self, input_shape: Shape, param_dtype: torch.dtype, deadline: float | None, budget_s: float | None
    ) -> None:
        self.input_shape = input_shape
        self.param_dtype = param_dtype
        self.deadline, self.budget_s = deadline, budget_s
        self.nodes: list[TracedLayer] = []

    def sequence(
        self, specs: list[LayerSpec], x: torch.Tensor, loc: Loc, path: str, depth: int
    ) -> tuple[list[LayerSpec], nn.Sequential, torch.Tensor, int]:
        inferred, modules, total = [], [], 0
        for i, spec in enumerate(specs):
            node = self.layer(spec, x, (*loc, i), _join(path, i), depth)
            inferred.append(node.spec)
            modules.append(node.module)
            total += node.flops
            x = node.output
        return inferred, nn.Sequential(*modules), x, total

    def layer(self, spec: LayerSpec, x: torch.Tensor, loc: Loc, path: str, depth: int) -> TracedLayer:
        if self.deadline is not None and time.thread_time() > self.deadline:
            raise LimitError(
                loc,
                f"tracing the model took more than {self.budget_s:g} s of CPU time; it stopped before this "
                f"{spec.type} (module path '{path}'). Use fewer or smaller layers",
                {"limit_s": self.budget_s, "layers_traced": len(self.nodes)},
            )
        node = TracedLayer(loc=loc, path=path, depth=depth, spec=spec, input_shape=tuple(x.shape))
        self.nodes.append(node)
        if isinstance(spec, ContainerSpec):
            sequences, modules, outputs = [], [], []
            for sub_loc, prefix, specs in spec.sequences():
                first_child = len(self.nodes)
                inferred, module, out, flops = self.sequence(
                    specs, x, (*loc, *sub_loc), _join(path, prefix) if prefix else path, depth + 1
                )
                node.children += [n for n in self.nodes[first_child:] if n.depth == depth + 1]
                sequences.append(inferred)
                modules.append(module)
                outputs.append(out)
                node.flops += flops
            node.spec = spec.with_sequences(sequences)
            node.module = node.spec.assemble(modules)
            with self.located(node):
                out = node.spec.combine(x, outputs)
        else:
            with self.located(node):
                node.spec = spec.infer(tuple(x.shape))
                with torch.device("meta"):
                    node.module = node.spec.build()
                if self.param_dtype != torch.get_default_dtype():  # .to() walks every tensor
                    node.module.to(self.param_dtype)
                out, node.flops = node.spec.trace(node.module, x)
        node.output = out
        return node

    @contextmanager
    def located(self, node: TracedLayer) -> Iterator[None]:
        """Turns any failure inside one layer into a ``SpecError`` that names that layer."""
        try:
            yield
        except Exception as exc:
            raise self.locate(node, exc) from exc

    def traced_so_far(self) -> list[dict]:
        done = [n for n in self.nodes if n.output is not None]
        return [{"path": n.path, "type": n.spec.type, "output_shape": list(n.output_shape)} for n in done]

    def locate(self, node: TracedLayer, exc: Exception) -> SpecError:
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
