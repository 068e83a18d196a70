"""The trace of a graph model: the trace pass (``layers.analysis.trace``) node by node, in the
graph's topological order, each node given the values its refs name.

A layer node is traced as a layer of a sequence is (containers, Repeats and the cache included),
on its main input, its tensor keyword arguments passed to its module (and inside a container, to
every layer). A merge or split node (``layers.language.graph_specs``) is built and run on its
inputs. The result is a ``TracedModel`` whose module is a ``GraphModule`` and whose ``graph``
holds the inputs, the outputs and the edges.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from layers.analysis.budget import TraceBudget, mode_for
from layers.analysis.cache import TraceCache
from layers.analysis.trace import (
    DTYPES,
    Edge,
    TracedGraph,
    TracedLayer,
    TracedModel,
    _Tracer,
    param_dtype_for,
    whole_trace,
)
from layers.language.base import LayerSpec
from layers.language.errors import Loc, NamingError
from layers.language.graph import GraphNode, GraphSpec, split_ref
from layers.language.graph_module import GraphModule
from layers.language.graph_specs import GraphOnlySpec
from layers.language.walk import Node

GRAPH_DTYPES: dict[str, torch.dtype] = {**DTYPES, "bool": torch.bool}


def trace_graph(
    spec: GraphSpec, budget: TraceBudget | None = None, cache: TraceCache | None = None
) -> TracedModel:
    """Build the graph on meta at its inputs' shapes; raise ``SpecError`` naming the node.

    The wiring is checked first (``GraphSpec.check``); then as ``trace_model``."""
    spec.check()
    inputs = {
        name: torch.empty(i.shape, dtype=GRAPH_DTYPES[i.dtype], device="meta")
        for name, i in spec.inputs.items()
    }
    floating = next((t.dtype for t in inputs.values() if t.is_floating_point()), torch.int64)
    first = next(iter(inputs.values()))
    mode = mode_for(budget)
    tracer = _GraphTracer(tuple(first.shape), param_dtype_for(floating), mode, cache)
    with whole_trace(mode):
        tops, values, edges = tracer.graph(spec, inputs)
    outputs = {
        name: (ref, tracer.value(values, ("outputs", name), ref)) for name, ref in spec.outputs.items()
    }
    nodes = [type(node).of(top.spec, node.wiring()) for node, top in zip(spec.nodes, tops, strict=True)]
    modules = {top.path: top.module for top in tops}
    module = GraphModule(modules, spec.wiring(), spec.input_names, dict(spec.outputs))
    first_out = next(iter(outputs.values()))[1]
    return TracedModel(
        spec=spec.model_copy(update={"nodes": nodes}),
        module=module,
        layers=tracer.nodes,
        input_shape=tuple(first.shape),
        output_shape=tuple(first_out.shape),
        param_dtype=tracer.param_dtype,
        flops=sum(top.flops for top in tops),
        uncounted_ops=sorted(mode.uncounted),
        input_dtype=first.dtype,
        graph=TracedGraph(inputs, outputs, edges),
    )


class _GraphTracer(_Tracer):
    """The trace pass over a graph's nodes; ``kwargs`` are the tensor arguments of the node being
    traced, given to each leaf inside it that takes them."""

    kwargs: dict[str, torch.Tensor] = {}

    def graph(
        self, spec: GraphSpec, inputs: dict[str, torch.Tensor]
    ) -> tuple[list[TracedLayer], dict[str, Any], list[Edge]]:
        values: dict[str, Any] = dict(inputs)
        tops: list[TracedLayer] = []
        edges: list[Edge] = []
        for node, top in zip(spec.nodes, spec.tops(), strict=True):
            given = [(arg, self.value(values, (*top.loc, *at), ref)) for at, arg, ref in node.wires()]
            edges += [Edge(ref, node.name, arg) for _, arg, ref in node.wires()]
            main = [v for arg, v in given if arg == "input" or arg.startswith("inputs.")]
            kwargs = {arg: v for arg, v in given if not (arg == "input" or arg.startswith("inputs."))}
            traced = self.node(node, top, main, kwargs)
            if isinstance(traced.output, list):  # several outputs: "name.0", "name.1"...
                traced.output = tuple(traced.output)
            traced.input_shapes = [tuple(v.shape) for _, v in given]
            values[node.name] = traced.output
            tops.append(traced)
        return tops, values, edges

    def node(
        self, node: GraphNode, top: Node, main: list[torch.Tensor], kwargs: dict[str, torch.Tensor]
    ) -> TracedLayer:
        if isinstance(top.spec, GraphOnlySpec):
            return self.graph_only(node, top, main)
        cache, self.kwargs = self.cache, kwargs
        if kwargs:  # the cache keys a layer by its main input only
            self.cache = None
        try:
            return self.layer(top, main[0])
        finally:
            self.cache, self.kwargs = cache, {}

    def graph_only(self, node: GraphNode, top: Node, main: list[torch.Tensor]) -> TracedLayer:
        """A merge or a split: built on meta and run on its inputs."""
        self.check_time(top.loc, top.path, top.spec)
        traced = TracedLayer(top.loc, top.path, 0, top.spec, tuple(main[0].shape))
        self.nodes.append(traced)
        self.traced[top.path] = traced
        assert isinstance(top.spec, GraphOnlySpec)
        with self.at(top):
            self.claim(top)
            with torch.device("meta"):
                traced.module = self.build(top, top.spec)
            out, traced.flops = top.spec.trace_values(traced.module, main, node.main_refs(), self.counter)
        self.named[node.name].done = True
        traced.output = out
        return traced

    def tensors(self, spec: LayerSpec) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.kwargs.items() if k in spec.tensor_args}

    def value(self, values: dict[str, Any], loc: Loc, ref: str) -> torch.Tensor:
        """The meta tensor ``ref`` names; a ref to output K that a node does not have, or to a node
        with several outputs without K, is a ``NamingError`` at ``loc``."""
        name, k = split_ref(ref)
        found = values[name]
        if isinstance(found, tuple):
            if k is None or k >= len(found):
                raise NamingError(
                    loc,
                    f"{name!r} has {len(found)} outputs: refer to one of them as "
                    + ", ".join(f"'{name}.{i}'" for i in range(len(found)))
                    + (f" (got {ref!r})" if k is not None else ""),
                    {"got": ref, "outputs": len(found)},
                )
            return found[k]
        if k is not None:
            raise NamingError(
                loc, f"{ref!r}: {name!r} has one output; refer to it as {name!r}", {"got": ref, "outputs": 1}
            )
        return found


__all__ = ["GRAPH_DTYPES", "nn", "trace_graph"]
