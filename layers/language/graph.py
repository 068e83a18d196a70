"""The graph form of a model: named inputs, nodes wired by name, named outputs.

```json
{"inputs": {"tokens": {"shape": [8, 128], "dtype": "int64"}},
 "nodes": [{"name": "tok", "type": "Embedding", "num_embeddings": 100, "embedding_dim": 16,
            "input": "tokens"}, ...],
 "outputs": {"hidden": "tok"}}
```

A node is any registered layer (containers included) with a required ``name`` and its wiring: the
``input`` it takes (a merge takes ``inputs``) and the tensor keyword arguments its module accepts
(``tensor_args``), each a ref: a graph input, an earlier node, or ``"node.K"`` for output K of a
node with several. Each layer type has a node class, a subclass of its spec class with the wiring
fields, made here once every type is registered; ``GraphNode.layer()`` is the layer spec itself.

``GraphSpec.check`` refuses, before anything is built, each at the node's ``loc``: cycles and
forward references, unknown refs, duplicate names, inputs and nodes nothing uses, outputs naming
nothing, and tensor arguments a layer does not take.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from torch import nn

from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec, Name
from layers.language.build import Builder
from layers.language.errors import Loc, NamingError
from layers.language.graph_module import Wiring
from layers.language.graph_specs import GRAPH_SPECS, GraphOnlySpec
from layers.language.model import AnyLayer, ModelSpec
from layers.language.spec import SpecModel, closest_name
from layers.language.walk import Node, nodes_under

GraphDType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"]
# A graph input or node name, or "node.K": output K of a node with several outputs.
Ref = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[0-9]{1,4})?$",
        description='a graph input, an earlier node, or "node.K" for output K of a multi-output node',
    ),
]
MAX_NODE_INPUTS = 1024
# Names a node cannot take: its module is an attribute of the graph module, and its value a
# variable of the exported forward.
RESERVED = {"self", "input_names", "output_names", "output_refs", "wiring", "call_with_args"}


class GraphInput(SpecModel):
    """One named input of a graph: its shape (batch first) and dtype (bool for masks)."""

    shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, description="batch first, e.g. [8, 128]")
    dtype: GraphDType = Field("float32", description='"int64" for token ids, "bool" for masks')


class GraphNode(LayerSpec):
    """The wiring every node class adds to its layer spec class (see the module doc)."""

    layer_class: ClassVar[type[LayerSpec]]
    wiring_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_args(cls, data: Any) -> Any:
        if isinstance(data, dict) and hasattr(cls, "layer_class"):
            for arg in ALL_TENSOR_ARGS:
                if arg in data and arg not in cls.wiring_fields:
                    takes = ", ".join(cls.layer_class.tensor_args) or "none"
                    raise PydanticCustomError(
                        "tensor_arg_invalid",
                        "{type} takes no tensor argument '{arg}' (its tensor arguments: {takes})",
                        {"type": cls.layer_class.__name__.removesuffix("Spec"), "arg": arg, "takes": takes},
                    )
        return data

    def layer(self) -> LayerSpec:
        """The node's layer spec (its fields without the wiring)."""
        cls = self.layer_class
        values = {k: getattr(self, k) for k in cls.model_fields}
        return cls.model_construct(_fields_set=self.model_fields_set & set(cls.model_fields), **values)

    def main_refs(self) -> list[str]:
        """The refs of the main input(s): ``input``, or each of ``inputs``."""
        refs = getattr(self, "inputs", None)
        return list(refs) if refs is not None else [self.input]  # type: ignore[attr-defined]

    def tensor_refs(self) -> dict[str, str]:
        """The tensor keyword arguments wired, by torch's name."""
        args = self.wiring_fields[1:]
        return {arg: ref for arg in args if (ref := getattr(self, arg)) is not None}

    def wires(self) -> Iterator[tuple[Loc, str, str]]:
        """``(loc in the node, arg, ref)`` for each ref: ``input``/``inputs.0``..., then tensor args."""
        refs = getattr(self, "inputs", None)
        if refs is not None:
            for i, ref in enumerate(refs):
                yield ("inputs", i), f"inputs.{i}", ref
        else:
            yield ("input",), "input", self.input  # type: ignore[attr-defined]
        for arg, ref in self.tensor_refs().items():
            yield (arg,), arg, ref

    @classmethod
    def of(cls, layer: LayerSpec, wiring: dict[str, Any]) -> GraphNode:
        """The node with ``layer``'s fields (e.g. its inferred spec) and ``wiring``."""
        values = {**{k: getattr(layer, k) for k in type(layer).model_fields}, **wiring}
        return cls.model_construct(_fields_set=layer.model_fields_set | set(wiring), **values)

    def wiring(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.wiring_fields if k in self.model_fields_set}


NODE_CLASSES: dict[str, type[GraphNode]] = {}  # by tag: the layer type, or "<type>:merge"
ALL_TENSOR_ARGS = tuple(sorted({arg for spec in LAYER_SPECS.values() for arg in spec.tensor_args}))


def _node_class(spec: type[LayerSpec]) -> type[GraphNode]:
    annotations: dict[str, Any] = {"name": Name}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": spec.__doc__,
        "registry": {},  # node classes are not layer types
        "layer_class": spec,
        "name": Field(description="the node's name: how other nodes and the outputs refer to its output"),
    }
    if issubclass(spec, GraphOnlySpec) and spec.several_inputs:
        annotations["inputs"] = list[Ref]
        namespace["inputs"] = Field(
            min_length=spec.min_inputs,
            max_length=spec.max_inputs or MAX_NODE_INPUTS,
            description="the refs of the tensors merged, in order",
        )
        wiring = ["inputs"]
    else:
        annotations["input"] = Ref
        namespace["input"] = Field(description="the ref of the tensor this node takes")
        wiring = ["input"]
    # A container passes its tensor arguments to the layers inside it (``_check_args``).
    for arg in ALL_TENSOR_ARGS if issubclass(spec, ContainerSpec) else spec.tensor_args:
        annotations[arg] = Ref | None
        namespace[arg] = Field(None, description=f"the ref of the tensor passed as `{arg}`")
        wiring.append(arg)
    namespace["__annotations__"] = annotations
    namespace["wiring_fields"] = tuple(wiring)
    name = spec.__name__.removesuffix("Spec") + "Node"
    return type(name, (spec, GraphNode), namespace)  # type: ignore[return-value]


for _type, _spec in LAYER_SPECS.items():
    NODE_CLASSES[_type] = _node_class(_spec)
for _type, _spec in GRAPH_SPECS.items():
    NODE_CLASSES[f"{_type}:merge" if _type in LAYER_SPECS else _type] = _node_class(_spec)
for _cls in NODE_CLASSES.values():
    _cls.model_rebuild(_types_namespace={"AnyLayer": AnyLayer})
    # Bound by name here, so a node pickles (to a trace worker) as ``graph.<Type>Node``.
    assert _cls.__name__ not in globals(), _cls.__name__
    globals()[_cls.__name__] = _cls


def _tag(data: Any) -> str | None:
    if isinstance(data, GraphNode):
        data = {"type": data.type, **({"inputs": 1} if "inputs" in type(data).model_fields else {})}
    if not isinstance(data, dict):
        return None
    tag = data.get("type")
    if tag in GRAPH_SPECS and tag in LAYER_SPECS and "inputs" in data:
        return f"{tag}:merge"  # Concat and Multiply of the graph form: the merge
    return tag if tag in NODE_CLASSES else None


def _known_node_type(data: Any) -> Any:
    tag = data.get("type") if isinstance(data, dict) else None
    if isinstance(tag, str) and _tag(data) is None:
        names = sorted({*LAYER_SPECS, *GRAPH_SPECS})
        close = closest_name(tag, names)
        raise PydanticCustomError(
            "union_tag_invalid",
            "unknown type '{tag}'" + (f"; did you mean '{close}'?" if close else ".") + " Expected one of: "
            "{expected_tags}",
            {"discriminator": "'type'", "tag": tag, "expected_tags": ", ".join(f"'{n}'" for n in names)},
        )
    return data


AnyNode = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in NODE_CLASSES.items())],  # noqa: UP007
    Discriminator(_tag),
    BeforeValidator(_known_node_type),
]


def split_ref(ref: str) -> tuple[str, int | None]:
    """``("enc", None)`` for ``"enc"``, ``("sp", 1)`` for ``"sp.1"``."""
    name, _, k = ref.partition(".")
    return name, int(k) if k else None


class GraphSpec(BaseModel):
    """A model as a graph: named inputs, nodes in topological order, named outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[Name, GraphInput] = Field(min_length=1, description="the graph's inputs by name")
    nodes: list[AnyNode] = Field(min_length=1, description="the nodes, each after those it uses")
    outputs: dict[Name, Ref] = Field(min_length=1, description="the graph's outputs: name -> ref")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def tops(self) -> Iterator[Node]:
        """The nodes as the walk's top-level nodes: path = name."""
        return (Node(node.layer(), ("nodes", i), node.name) for i, node in enumerate(self.nodes))

    def walk(self) -> Iterator[tuple[Loc, int, LayerSpec]]:
        """Every layer node, a container's children included, as ``ModelSpec.walk``."""
        return ((node.loc, node.depth, node.spec) for node in nodes_under(self.tops()))

    check_limits = ModelSpec.check_limits

    def check(self) -> None:
        """Raise ``SpecError`` at the first node whose wiring is wrong (see the module doc)."""
        taken: dict[str, Loc] = {}
        for name in self.inputs:
            _check_name(("inputs", name), name, "input", taken)
        index = {node.name: i for i, node in enumerate(self.nodes)}
        for i, node in enumerate(self.nodes):
            _check_name(("nodes", i, "name"), node.name, "node", taken)
        used: set[str] = set()
        for i, node in enumerate(self.nodes):
            _check_args(i, node)
            for at, _, ref in node.wires():
                name = self._resolve((*("nodes", i), *at), ref, before=i, index=index)
                used.add(name)
        for out, ref in self.outputs.items():
            used.add(self._resolve(("outputs", out), ref, before=len(self.nodes), index=index))
        for name in self.inputs:
            if name not in used:
                raise NamingError(
                    ("inputs", name),
                    f"the input {name!r} is used by no node and no output; remove it or wire it",
                    {"got": name},
                )
        for i, node in enumerate(self.nodes):
            if node.name not in used:
                raise NamingError(
                    ("nodes", i),
                    f"the node {node.name!r} ({node.type}) is used by no node and no output; remove "
                    "it, or name it in `outputs`",
                    {"got": node.name},
                )

    def _resolve(self, loc: Loc, ref: str, before: int, index: dict[str, int]) -> str:
        """The name ``ref`` refers to, checked: a graph input or a node before ``before``."""
        name, k = split_ref(ref)
        if name in self.inputs:
            if k is not None:
                raise NamingError(loc, f"{ref!r}: the input {name!r} is one tensor; refer to it as {name!r}")
            return name
        if name not in index:
            known = [*self.inputs, *(n.name for n in self.nodes[:before])]
            close = closest_name(name, known)
            raise NamingError(
                loc,
                f"{ref!r} names no graph input and no node"
                + (f"; did you mean {close!r}?" if close else "")
                + f" (inputs: {', '.join(self.inputs)}; nodes before this one: "
                + (", ".join(n.name for n in self.nodes[:before]) or "none")
                + ")",
                {"got": ref, "expected": known},
            )
        j = index[name]
        if j >= before:
            cycle = self._cycle(j, before, index)
            if cycle is not None:
                raise NamingError(
                    loc,
                    f"{ref!r} makes a cycle: " + " -> ".join(cycle) + "; a graph has no cycles",
                    {"got": ref, "cycle": cycle},
                )
            raise NamingError(
                loc,
                f"{ref!r} is node {j}, which comes after this one (node {before}): list each node after "
                "the nodes it uses (topological order)",
                {"got": ref, "node": j},
            )
        return name

    def _cycle(self, start: int, target: int, index: dict[str, int]) -> list[str] | None:
        """The names on a path of refs from node ``start`` back to node ``target``, if there is one."""
        names = [n.name for n in self.nodes]
        if start == target:
            return [names[target], names[target]]
        parent: dict[int, int] = {start: start}
        stack = [start]
        while stack:
            i = stack.pop()
            for _, _, ref in self.nodes[i].wires():
                j = index.get(split_ref(ref)[0])
                if j is None or j in parent:
                    continue
                parent[j] = i
                if j == target:
                    path = [target]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [names[target], *(names[p] for p in reversed(path))]
                stack.append(j)
        return None

    def dump(self) -> dict[str, Any]:
        """As JSON: each node's every field (as a layer's ``model_dump``) and the wiring it was given."""
        return {
            "inputs": {name: i.model_dump() for name, i in self.inputs.items()},
            "nodes": [{**node.layer().model_dump(), **node.wiring()} for node in self.nodes],
            "outputs": dict(self.outputs),
        }

    def wiring(self) -> list[Wiring]:
        """Each node's wiring, in the graph's (topological) order."""
        return [Wiring(n.name, tuple(n.main_refs()), tuple(n.tensor_refs().items())) for n in self.nodes]

    def build(self) -> nn.Module:
        """The ``GraphModule`` of a fully inferred graph (``layers.analysis.graph_trace``)."""
        return Builder().graph(self.tops(), self.wiring(), self.input_names, dict(self.outputs))


def _check_name(loc: Loc, name: str, what: str, taken: dict[str, Loc]) -> None:
    if keyword.iskeyword(name) or name in RESERVED or hasattr(nn.Module, name):
        raise NamingError(
            loc,
            f"{name!r} cannot name a graph {what}: it is a Python keyword or an attribute of torch's "
            "nn.Module (the exported model's forward names its variables after the inputs and nodes)",
            {"got": name},
        )
    if name in taken:
        first = taken[name]
        where = f"the input {first[1]!r}" if first[0] == "inputs" else f"node {first[1]}"
        raise NamingError(
            loc,
            f"the name {name!r} is already taken by {where}; input and node names must be unique",
            {"got": name, "taken_by": list(first)},
        )
    taken[name] = loc[:2]


def _check_args(i: int, node: GraphNode) -> None:
    """A container node's tensor arguments must reach every leaf inside it (it passes them on)."""
    args = node.tensor_refs()
    spec = node.layer()
    if not args or not isinstance(spec, ContainerSpec):
        return
    for inner in nodes_under(iter([Node(spec, (), node.name)])):
        if isinstance(inner.spec, ContainerSpec):
            continue
        missing = [a for a in args if a not in inner.spec.tensor_args]
        if missing:
            raise NamingError(
                ("nodes", i, missing[0]),
                f"{node.type} {node.name!r} passes {missing[0]!r} to every layer inside it, but its "
                f"{inner.spec.type} at '{inner.path}' does not take it (it takes: "
                + (", ".join(inner.spec.tensor_args) or "no tensor arguments")
                + ")",
                {"got": missing[0], "expected": list(inner.spec.tensor_args)},
            )


def _either_form(data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate as the graph form when the model has ``nodes`` (and no ``layers``), else as the
    sequence form: each form's errors at their own locs (a tagged union would put its tag there)."""
    if isinstance(data, ModelSpec | GraphSpec):
        return data
    if isinstance(data, dict) and "nodes" in data and "layers" not in data:
        return GraphSpec.model_validate(data)
    return ModelSpec.model_validate(data)


# A model field: the sequence form ({"layers": [...]}) or the graph form ({"nodes": [...]}).
AnyModel = Annotated[ModelSpec | GraphSpec, WrapValidator(_either_form)]


__all__ = ["AnyModel", "GraphDType", "GraphInput", "GraphNode", "GraphSpec"]
