"""A traced model as one Python file that imports only torch.

The file defines the project's own modules the model uses (their source, copied from this
package with the project base classes, helper functions and constant tables they read) and a
``build_model()`` that returns exactly the module the service builds: the same ``print(model)``
and the same parameter names and shapes, so trained weights load with ``strict=True``.

``CodeWriter`` is a pass over the spec (``layers.language.walk``): a container is written as it
assembles its module (``ContainerSpec.assemble``), a leaf by building its module on meta and
calling its class with the spec's fields that its ``__init__`` takes: a torch class is written
``nn.Name``, one of ours is defined in the file. Specs that do not map onto their module's
arguments one to one have a rule in ``layers.export.rules``. A frozen layer (``trainable: false``)
is written ``<call>.requires_grad_(False)``, where it is built. Nothing here evaluates or imports
user strings: every value written into the file is a validated spec field, written with ``repr``.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import math
import re
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layers.analysis.trace import TracedModel
from layers.export.example import vocabulary
from layers.export.rules import CODE_RULES
from layers.language.base import ContainerSpec, LayerSpec
from layers.language.graph import GraphSpec
from layers.language.graph_module import call_with_args
from layers.language.model import ModelSpec
from layers.language.walk import Node, Walk

LINE = 100  # longest one-line call before its arguments go one per line
PROJECT_PACKAGES = ("layers", "app")
# Module objects a copied class may read, and how the exported file imports them.
IMPORTS: dict[int, tuple[str, str]] = {
    id(torch): ("torch", "import torch"),
    id(nn): ("nn", "from torch import nn"),
    id(nn.functional): ("F", "from torch.nn import functional as F"),
    id(math): ("math", "import math"),
}


class ExportError(Exception):
    """A layer whose module the exporter cannot write as code (a bug in its spec class, not user input)."""


@dataclass
class Call:
    """The expression ``func(*args, **kwargs)``; arguments are plain values or expressions."""

    func: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ListOf:
    """A list literal of expressions (e.g. the branches of a Concat)."""

    items: list[Any]


@dataclass
class _Name:
    """A name written as is (a class in a constant table)."""

    name: str


@dataclass
class Stack:
    """``n`` identical sequences one after the other: ``nn.Sequential(*(block for _ in range(n)))``,
    which builds (and initialises) them in the same order as the service."""

    block: Any
    times: int


@dataclass
class Frozen:
    """A module built and then frozen: ``expr.requires_grad_(False)`` (which returns the module)."""

    module: Any


def _access(path: str) -> str:
    """``model[2].layers[0].weight`` for the module path ``2.layers.0.weight``."""
    return "model" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in path.split("."))


def _is_project(obj: Any) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] in PROJECT_PACKAGES


def _plain(value: Any) -> Any:
    """A spec field as its module takes it: JSON lists become tuples (what the specs pass torch)."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class CodeWriter(Walk[Any, Call]):
    """The code-export pass: each node's module as an expression, collecting the definitions
    (project classes, functions and constant tables) and imports the expressions need."""

    def __init__(self) -> None:
        super().__init__()
        self.imports: dict[str, str] = {"torch": "import torch", "nn": "from torch import nn"}
        self.definitions: dict[str, str] = {}  # name -> source, dependencies first
        self.after: list[str] = []  # statements run on ``model`` once it is built (e.g. tying)
        self._defined_objects: dict[str, Any] = {}

    # ---- the pass ---------------------------------------------------------------------------

    def leaf(self, node: Node, x: Any) -> Any:
        rule = CODE_RULES.get(type(node.spec))
        code = self.default(node.spec) if rule is None else rule(node.spec, self.call)
        code = self.frozen(node, code)
        target = self.tie_target(node)
        if target is not None:  # the same tensor, as layers.language.build ties it (the owner comes first)
            own = _access(f"{node.path}.{node.spec.tieable_weight}")
            self.after.append(f"{own} = {_access(f'{target.path}.{target.spec.tieable_weight}')}  # tied")
        return code

    def made_sequence(self, results: list[Any]) -> Call:
        return Call("nn.Sequential", results)  # as the service builds a sequence (layers.language.build)

    def container(self, node: Node, x: Any, sequences: list[Call], outputs: list[Any]) -> Any:
        assert isinstance(node.spec, ContainerSpec)
        return self.frozen(node, node.spec.assemble(self.make, sequences))

    def frozen(self, node: Node, code: Any) -> Any:
        """A layer with ``trainable: false`` frozen where it is built (a container: all inside it),
        before the ties (written after the build) share a weight: a tied weight is frozen as its
        owner is, as in ``layers.language.build``."""
        return code if node.spec.trainable else Frozen(code)

    def make(self, cls: type[nn.Module], /, *args: Any, **kwargs: Any) -> Any:
        """The code pass's ``Make``: the call, a list of sequences as a list literal, and identical
        copies one after the other (a Repeat's) as a loop."""
        if cls is nn.Sequential and len(args) > 1 and not kwargs and all(a == args[0] for a in args):
            return Stack(args[0], len(args))
        return self.call(cls, *(ListOf(a) if isinstance(a, list) else a for a in args), **kwargs)

    def call(self, target: type | Any, *args: Any, **kwargs: Any) -> Call:
        """``target(*args, **kwargs)`` with the class defined or imported; leading required
        arguments are written positionally and keyword arguments equal to their default dropped."""
        name = self.ref(target)
        try:
            params = list(inspect.signature(target).parameters.values())
        except (TypeError, ValueError):
            params = []
        args = list(args)
        for p in params[len(args) :]:
            required = p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
            if not required or p.name not in kwargs:
                break
            args.append(kwargs.pop(p.name))
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        kwargs = {k: v for k, v in kwargs.items() if not (k in defaults and _same(v, defaults[k]))}
        return Call(name, args, kwargs)

    def default(self, spec: LayerSpec) -> Any:
        """The generic rendering of a leaf: its built module's class called with the spec fields
        its ``__init__`` takes. Specs that do not map onto their module's arguments one to one
        have a rule in ``layers.export.rules``."""
        skip = {*LayerSpec.model_fields, "tie_weight"}  # type, name: the spec's own; ties: after the build
        values = {k: _plain(v) for k, v in spec.model_dump(exclude=skip).items()}
        with torch.device("meta"):
            module = spec.build()
        cls = type(module)
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError) as e:
            raise ExportError(f"{spec.type}: cannot read the signature of {cls.__qualname__}") from e
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in values.items() if k in params or takes_any}
        try:
            inspect.signature(cls).bind(**kwargs)
        except TypeError as e:
            raise ExportError(
                f"{spec.type}: its spec fields do not match {cls.__qualname__}'s arguments ({e}); "
                "give it a rule in layers.export.rules"
            ) from e
        return self.call(cls, **kwargs)

    # ---- definitions ----------------------------------------------------------------------

    def ref(self, obj: Any) -> str:
        """The name ``obj`` (a class or function) has in the exported file, defining it if needed."""
        if isinstance(obj, type) and nn.__dict__.get(obj.__name__) is obj:
            return f"nn.{obj.__name__}"
        if _is_project(obj):
            self._define(obj)
            return obj.__name__
        raise ExportError(f"cannot write {obj!r} in exported code: it is not torch.nn's nor this project's")

    def _define(self, obj: Any) -> None:
        name = obj.__name__
        if name in self._defined_objects:
            if self._defined_objects[name] is not obj:
                raise ExportError(f"two different definitions are both named {name!r}")
            return
        self._defined_objects[name] = obj  # before its dependencies: a class may refer to itself
        if isinstance(obj, type):
            for base in reversed(obj.__mro__[1:]):  # torch's bases come with `nn`
                if _is_project(base):
                    self._define(base)
        source = textwrap.dedent(inspect.getsource(obj))
        module_globals = vars(sys.modules[obj.__module__])
        in_code, in_annotations = _free_names(source)
        for free in sorted(in_code):
            if free in self.imports or free in self._defined_objects or hasattr(builtins, free):
                continue
            if free not in module_globals:
                raise ExportError(f"{name} reads {free!r}, which its module does not define")
            self._provide(free, module_globals[free], name)
        for free in sorted(in_annotations):  # for readers and linters; never evaluated
            if free not in self.imports and free not in self._defined_objects and free in module_globals:
                self._annotate(free, module_globals[free])
        self.definitions[name] = source

    def _annotate(self, name: str, value: Any) -> None:
        """Define a name used only in annotations when it is simple: a typing name or a Literal alias."""
        if getattr(value, "__module__", None) == "typing" and getattr(typing, name, None) is value:
            self.imports[name] = f"from typing import {name}"
        elif typing.get_origin(value) is typing.Literal:
            self.imports["Literal"] = "from typing import Literal"
            self._defined_objects[name] = value
            args = ", ".join(render(a) for a in typing.get_args(value))
            self.definitions[name] = f"{name} = Literal[{args}]\n"
        elif _is_project(value) and inspect.isclass(value) and issubclass(value, nn.Module):
            self._define(value)

    def _provide(self, name: str, value: Any, reader: str) -> None:
        """Make the global ``name`` that a copied definition reads available in the file."""
        if id(value) in IMPORTS:
            alias, statement = IMPORTS[id(value)]
            if alias != name:
                raise ExportError(f"{reader} reads {value.__name__} as {name!r}; import it as {alias!r}")
            self.imports[name] = statement
        elif _is_project(value) and inspect.isclass(value) and not issubclass(value, nn.Module):
            # A spec's class or error, or another of our tools: what checks a spec belongs to the
            # spec (its ``infer``), never to the module the user takes away.
            raise ExportError(f"{reader} reads {name!r}, a class of ours that is not a torch module")
        elif _is_project(value) and (inspect.isclass(value) or inspect.isfunction(value)):
            self._define(value)
        elif isinstance(value, int | float | str | bool | tuple | dict | type(None)):
            self._defined_objects[name] = value
            self.definitions[name] = f"{name} = {render(_constant(value, self))}\n"
        else:
            raise ExportError(f"{reader} reads {name!r} ({type(value).__name__}), which cannot be exported")


def _constant(value: Any, writer: CodeWriter) -> Any:
    """A module-level constant table as an expression (classes in it become references)."""
    if isinstance(value, dict):
        return {k: _constant(v, writer) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_constant(v, writer) for v in value)
    if isinstance(value, type):
        return _Name(writer.ref(value))
    return value


def _free_names(source: str) -> tuple[set[str], set[str]]:
    """Names a definition reads but does not bind itself: ``(in code, in annotations only)``.
    Annotations are never evaluated (the file has ``from __future__ import annotations``)."""
    tree = ast.parse(source)
    annotations: set[int] = set()
    for node in ast.walk(tree):
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                annotations.update(id(n) for n in ast.walk(ann))
    loaded, in_annotations, bound = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if id(node) in annotations:
                in_annotations.add(node.id)
            else:
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
    return loaded - bound, in_annotations - bound - loaded


def render(value: Any, indent: int = 0) -> str:
    """Python source for an expression or a plain value (repr: exact for floats and strings)."""
    if isinstance(value, _Name):
        return value.name
    if isinstance(value, Call):
        parts = [render(a, indent + 4) for a in value.args]
        parts += [f"{k}={render(v, indent + 4)}" for k, v in value.kwargs.items()]
        values = [*value.args, *value.kwargs.values()]
        nested = any(
            isinstance(a, Stack | Frozen) or (isinstance(a, Call | ListOf) and _has_children(a))
            for a in values
        )
        one_line = f"{value.func}({', '.join(parts)})"
        if not nested and "\n" not in one_line and indent + len(one_line) <= LINE:
            return one_line
        pad = " " * (indent + 4)
        return f"{value.func}(\n" + "".join(f"{pad}{p},\n" for p in parts) + " " * indent + ")"
    if isinstance(value, Frozen):
        return f"{render(value.module, indent)}.requires_grad_(False)"
    if isinstance(value, Stack):
        one_line = f"nn.Sequential(*({render(value.block, indent)} for _ in range({value.times})))"
        if "\n" not in one_line and indent + len(one_line) <= LINE:
            return one_line
        pad = " " * (indent + 4)
        block = render(value.block, indent + 8)
        return (
            f"nn.Sequential(\n{pad}*(\n{pad}    {block}\n{pad}    for _ in range({value.times})\n"
            f"{pad})\n{' ' * indent})"
        )
    if isinstance(value, ListOf):
        pad = " " * (indent + 4)
        return "[\n" + "".join(f"{pad}{render(v, indent + 4)},\n" for v in value.items) + " " * indent + "]"
    if isinstance(value, dict):
        pad = " " * (indent + 4)
        items = "".join(f"{pad}{render(k)}: {render(v, indent + 4)},\n" for k, v in value.items())
        return "{\n" + items + " " * indent + "}"
    if isinstance(value, tuple):
        return (
            repr(value)
            if not any(isinstance(v, _Name | Call) for v in value)
            else ("(" + ", ".join(render(v, indent) for v in value) + ("," if len(value) == 1 else "") + ")")
        )
    if isinstance(value, str):
        return json.dumps(value)  # a valid Python literal, in double quotes
    if isinstance(value, float | int | bool | type(None)):
        return repr(value)
    raise ExportError(f"cannot write a {type(value).__name__} value in exported code")


def _imports(statements: Any) -> str:
    """Standard library first (typing names on one line), then torch."""
    statements = set(statements)
    typing_names = sorted(s.split()[-1] for s in statements if s.startswith("from typing import"))
    stdlib = sorted(s for s in statements if s == "import math")
    if typing_names:
        stdlib.append(f"from typing import {', '.join(typing_names)}")
    third = sorted(s for s in statements if s.startswith("import torch")) + sorted(
        s for s in statements if s.startswith("from torch")
    )
    return "\n\n".join("\n".join(block) for block in (stdlib, third) if block)


def _has_children(value: Stack | Call | ListOf) -> bool:
    if isinstance(value, Stack):
        return True
    return bool(value.items) if isinstance(value, ListOf) else bool(value.args or value.kwargs)


def python_source(
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    input_dtype: torch.dtype,
    param_dtype: torch.dtype,
    header: str,
) -> str:
    """The exported file for an inferred ``spec`` (from ``layers.analysis.trace.trace_model``)."""
    writer = CodeWriter()
    model, _ = writer.model(spec.layers)
    body = f"    model = {render(model, 4)}\n" + "".join(f"    {line}\n" for line in writer.after)
    if param_dtype != torch.float32:
        body += f"    model = model.to({param_dtype})\n"
    if input_dtype.is_floating_point:
        example = f"torch.randn(INPUT_SHAPE, dtype={input_dtype})"
    else:
        example = f"torch.randint(0, {vocabulary(spec)}, INPUT_SHAPE, dtype={input_dtype})"
    blocks = [
        f'"""{header.strip().replace(chr(34) * 3, chr(39) * 3)}\n"""',
        "from __future__ import annotations",
        _imports(writer.imports.values()),
        *(source.rstrip() for source in writer.definitions.values()),
        f"INPUT_SHAPE = {tuple(input_shape)!r}",
        f"def build_model() -> nn.Module:\n{body}    return model",
        'if __name__ == "__main__":\n'
        "    model = build_model()\n"
        "    print(model)\n"
        "    model.train(False)  # inference mode: dropout off, batch norm on its running statistics\n"
        "    with torch.no_grad():\n"
        f"        output = model({example})\n"
        '    print("input", list(INPUT_SHAPE), "-> output", list(output.shape))',
    ]
    # One blank line after the docstring and between import groups, two around definitions.
    return "\n\n".join(blocks[:3]) + "\n\n\n" + "\n\n\n".join(blocks[3:]) + "\n"


def _ref(ref: str) -> str:
    """A ref as the forward's expression: ``enc``, or ``sp[1]`` for output 1 of ``sp``."""
    name, _, k = ref.partition(".")
    return f"{name}[{k}]" if k else name


def _example(shape: Sequence[int], dtype: torch.dtype, vocab: int) -> str:
    if dtype.is_floating_point:
        return f"torch.randn({tuple(shape)!r}, dtype={dtype})"
    if dtype == torch.bool:
        return f"torch.zeros({tuple(shape)!r}, dtype=torch.bool)"  # a mask: nothing padded
    return f"torch.randint(0, {vocab}, {tuple(shape)!r}, dtype={dtype})"


def _names(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(json.dumps(n) for n in names) + ("," if len(names) == 1 else "") + ")"


def graph_source(
    spec: GraphSpec, inputs: dict[str, torch.Tensor], param_dtype: torch.dtype, header: str
) -> str:
    """The exported file for an inferred graph (``layers.analysis.graph_trace.trace_graph``): a
    ``Model`` whose ``__init__`` makes each node's module under its name and whose ``forward`` reads
    like torch.fx's generated code, one named variable per node in topological order."""
    writer = CodeWriter()
    init = [f"self.{top.path} = {render(writer.layer(top, None), 8)}" for top in spec.tops()]
    init += [re.sub(r"\bmodel\b", "self", line) for line in writer.after]  # ties
    forward = []
    for node in spec.nodes:
        main = ", ".join(_ref(ref) for ref in node.main_refs())
        args = node.tensor_refs()
        if args and isinstance(node.layer(), ContainerSpec):  # passed to every layer inside
            kwargs = "{" + ", ".join(f"{json.dumps(a)}: {_ref(r)}" for a, r in args.items()) + "}"
            forward.append(
                f"{node.name} = {writer.ref(call_with_args)}(self.{node.name}, [{main}], {kwargs})"
            )
        else:
            kwargs = "".join(f", {a}={_ref(r)}" for a, r in args.items())
            forward.append(f"{node.name} = self.{node.name}({main}{kwargs})")
    outputs = ", ".join(f"{json.dumps(name)}: {_ref(ref)}" for name, ref in spec.outputs.items())
    forward.append(f"return {{{outputs}}}")
    signature = ", ".join(f"{name}: torch.Tensor" for name in spec.inputs)
    model_class = (
        "class Model(nn.Module):\n"
        f"    input_names = {_names(spec.input_names)}\n"
        f"    output_names = {_names(spec.output_names)}\n\n"
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n"
        + "".join(f"        {line}\n" for line in init)
        + f"\n    def forward(self, {signature}) -> dict[str, torch.Tensor]:\n"
        + "".join(f"        {line}\n" for line in forward)
    )
    body = "    model = Model()\n"
    if param_dtype != torch.float32:
        body += f"    model = model.to({param_dtype})\n"
    vocab = vocabulary(spec)
    examples = "".join(
        f"            {name}={_example(t.shape, t.dtype, vocab)},\n" for name, t in inputs.items()
    )
    blocks = [
        f'"""{header.strip().replace(chr(34) * 3, chr(39) * 3)}\n"""',
        "from __future__ import annotations",
        _imports(writer.imports.values()),
        *(source.rstrip() for source in writer.definitions.values()),
        model_class.rstrip(),
        f"def build_model() -> nn.Module:\n{body}    return model",
        'if __name__ == "__main__":\n'
        "    model = build_model()\n"
        "    print(model)\n"
        "    model.train(False)  # inference mode: dropout off, batch norm on its running statistics\n"
        "    with torch.no_grad():\n"
        f"        outputs = model(\n{examples}        )\n"
        "    for name, output in outputs.items():\n"
        "        print(name, list(output.shape))",
    ]
    return "\n\n".join(blocks[:3]) + "\n\n\n" + "\n\n\n".join(blocks[3:]) + "\n"


def python_file(traced: TracedModel, about: str) -> bytes:
    """The exported file of ``traced``, its docstring opening with ``about``."""
    params = sum(p.numel() for p in traced.module.parameters())
    input_dtype = str(traced.input_dtype).removeprefix("torch.")
    if traced.graph is not None:
        assert isinstance(traced.spec, GraphSpec)
        ins = ", ".join(
            f"{name} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}"
            for name, t in traced.graph.inputs.items()
        )
        outs = ", ".join(f"{name} {list(t.shape)}" for name, (_, t) in traced.graph.outputs.items())
        header = (
            f"{about}\n\n"
            f"Exported by Model Builder (torch {torch.__version__.split('+')[0]}): inputs {ins} -> "
            f"outputs {outs}, {params:,} parameters.\n"
            "build_model() returns a module with the service's parameter names, so trained weights\n"
            "load strictly:\n\n"
            "    from safetensors.torch import load_model\n"
            "    model = build_model()\n"
            '    load_model(model, "model.safetensors")  # strict=True; handles tied weights\n'
        )
        return graph_source(traced.spec, traced.graph.inputs, traced.param_dtype, header).encode()
    header = (
        f"{about}\n\n"
        f"Exported by Model Builder (torch {torch.__version__.split('+')[0]}): input "
        f"{list(traced.input_shape)} {input_dtype} -> output {list(traced.output_shape)}, "
        f"{params:,} parameters.\n"
        "build_model() returns the module the service builds (same print(model), same parameter\n"
        "names), so trained weights load strictly:\n\n"
        "    from safetensors.torch import load_model\n"
        "    model = build_model()\n"
        '    load_model(model, "model.safetensors")  # strict=True; handles tied weights\n'
    )
    return python_source(
        traced.spec, traced.input_shape, traced.input_dtype, traced.param_dtype, header
    ).encode()
