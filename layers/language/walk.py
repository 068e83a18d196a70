"""The one walk over a model spec: build, trace and code export are passes over it.

``Walk`` visits every layer node once, in forward order, each copy a ``Repeat`` makes included:
it enters a node's ``name``, resolves its ``tie_weight``, reads a container's sequences from the
container (``ContainerSpec.sequences``) and hands each node to the pass, which says what it makes
of a leaf, of a sequence and of a container. Values flow along: each node receives what the node
before it gave (a meta tensor in the trace, nothing in the build or the code export), each of a
container's sequences receives the container's input.

A pass subclasses ``Walk`` (as ``ast.NodeVisitor`` is subclassed):

- ``layers.language.build.Builder``: the modules;
- ``layers.analysis.trace``: the build on meta, with sizes inferred and shapes and FLOPs read;
- ``layers.export.codegen.CodeWriter``: the Python expression of each module.

``nodes`` enumerates the same nodes lazily, without recursion, for checks that must stop early
(the layer limit) however many copies a spec asks for.

A graph form of the spec (named values, nodes with several inputs) is one more way to visit:
nodes in topological order, each given the values its inputs name instead of its predecessor's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from layers.language.base import LAYER_SPECS, ContainerSpec, LayerSpec
from layers.language.errors import Loc, NamingError, SpecError

R = TypeVar("R")  # what a pass makes of one node
S = TypeVar("S")  # what a pass makes of a sequence of nodes


def join(path: str, name: str | int) -> str:
    """The module path ``name`` under ``path``; an empty part is no level ("" + "3" is "3")."""
    name = str(name)
    return f"{path}.{name}" if path and name else path or name


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 5x as much to make, once per node
class Node:
    """One layer of the spec tree where the walk meets it (passes read it, never change it)."""

    spec: LayerSpec
    loc: Loc  # in the model spec, e.g. ("layers", 3, "layers", 0); a Repeat's copies share theirs
    path: str  # module path, e.g. "3.layers.0"
    depth: int = 0  # 0 for top-level layers, +1 inside each container
    repeat: tuple[int, int] | None = None  # (copy, times) of the innermost Repeat around it
    # The module path of the same layer in the first copy of the Repeats around it; None in that
    # copy. A pass may make this node from that one (the trace does: the copies are alike).
    twin: str | None = None
    frozen: bool = False  # ``trainable: false`` on it or on a container around it


def _frozen(spec: LayerSpec, around: bool = False) -> bool:
    return around or not spec.trainable


def top(layers: Sequence[LayerSpec]) -> Iterator[Node]:
    """The model's own layers as nodes."""
    return (Node(spec, ("layers", i), str(i), frozen=_frozen(spec)) for i, spec in enumerate(layers))


def slots(node: Node) -> Iterator[Iterator[Node]]:
    """A container node's sequences, each as its nodes in forward order; lazy, so that a huge
    Repeat costs only the copies reached."""
    spec = node.spec
    assert isinstance(spec, ContainerSpec)
    sequences = spec.sequences()
    first = join(node.path, sequences[0].path) if sequences else ""
    for copy, slot in enumerate(sequences):
        base = join(node.path, slot.path)
        if spec.copies and copy:
            twin_base: str | None = first
        else:
            twin_base = None if node.twin is None else join(node.twin, slot.path)
        repeat = (copy, len(sequences)) if spec.copies else node.repeat
        yield (
            Node(
                child,
                (*node.loc, *slot.loc, i),
                join(base, i),
                node.depth + 1,
                repeat,
                None if twin_base is None else join(twin_base, i),
                _frozen(child, node.frozen),
            )
            for i, child in enumerate(slot.specs)
        )


def nodes(layers: Sequence[LayerSpec]) -> Iterator[Node]:
    """Every node in forward (pre-)order, without recursion, lazily (see ``slots``)."""
    return nodes_under(top(layers))


def nodes_under(tops: Iterator[Node]) -> Iterator[Node]:
    """``tops`` and every node inside them, in forward (pre-)order (a graph's nodes are its tops)."""
    stack: list[Iterator[Node]] = [tops]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        yield node
        if isinstance(node.spec, ContainerSpec):
            stack.append(child for sequence in slots(node) for child in sequence)


@dataclass
class _Named:
    node: Node
    done: bool = False  # visited to the end: its module exists in the pass


class Walk(Generic[R, S]):
    """Visits a spec tree once, in forward order; subclasses are the passes (see the module doc).

    Names and ties are resolved here, for every pass alike: ``NamingError`` (``loc`` relative to
    the node) on a name used twice, a name inside a ``Repeat``, or a ``tie_weight`` that names no
    earlier layer with a weight to tie to.
    """

    def __init__(self) -> None:
        self.named: dict[str, _Named] = {}
        self.tied: dict[str, dict[str, str]] = {}  # layer path -> {its parameter: owner layer path}

    # ---- the walk ---------------------------------------------------------------------------

    def model(self, layers: Sequence[LayerSpec], x: Any = None) -> tuple[S, Any]:
        """The model's layers as the pass makes them, and the model's output value."""
        return self.sequence(top(layers), x)

    def sequence(self, sequence: Iterable[Node], x: Any) -> tuple[S, Any]:
        results = []
        for node in sequence:
            result = self.layer(node, x)
            results.append(result)
            x = self.output(result)
        return self.made_sequence(results), x

    def layer(self, node: Node, x: Any) -> R:
        self.enter(node, x)
        spec = node.spec
        container = isinstance(spec, ContainerSpec)
        try:  # as ``at`` does, without a context manager's cost on every node
            self.claim(node)
            if not container:
                result = self.leaf(node, x)
        except Exception as exc:
            self._raise_failed(node, exc)
        if container:
            result = self._container(node, spec, x)
        if spec.name is not None:
            self.named[spec.name].done = True
        return result

    def _container(self, node: Node, spec: ContainerSpec, x: Any) -> R:
        sequences, outputs = [], []
        for copy, sequence in enumerate(slots(node)):
            made, out = self.sequence(sequence, x)
            sequences.append(made)
            outputs.append(out)
            if spec.copies and copy == 0:
                with self.at(node):
                    self.first_copy(node, x, out)
        with self.at(node):
            return self.container(node, x, sequences, outputs)

    # ---- what a pass says -------------------------------------------------------------------

    def enter(self, node: Node, x: Any) -> None:
        """Called first at each node, outside ``at``."""

    @contextmanager
    def at(self, node: Node) -> Iterator[None]:
        """Around the work on one node: what it raises becomes ``failed``'s answer."""
        try:
            yield
        except Exception as exc:
            self._raise_failed(node, exc)

    def _raise_failed(self, node: Node, exc: Exception) -> NoReturn:
        """Raise ``failed``'s answer for ``exc``, the exception being handled."""
        failed = self.failed(node, exc)
        if failed is exc:
            raise  # exc as it is, its traceback untouched
        raise failed from exc

    def failed(self, node: Node, exc: Exception) -> Exception:
        """What to raise for ``exc`` raised at ``node`` (``exc`` itself: it goes on as it is). A
        ``SpecError`` (its ``loc`` relative to the node) is moved under the node's ``loc``."""
        if isinstance(exc, SpecError):
            return type(exc)((*node.loc, *exc.loc), exc.msg, exc.ctx)
        return exc

    def leaf(self, node: Node, x: Any) -> R:
        raise NotImplementedError

    def made_sequence(self, results: list[R]) -> S:
        raise NotImplementedError

    def first_copy(self, node: Node, x: Any, out: Any) -> None:
        """Called after the first copy of a ``copies`` container, before the others are visited."""

    def container(self, node: Node, x: Any, sequences: list[S], outputs: list[Any]) -> R:
        raise NotImplementedError

    def output(self, result: R) -> Any:
        """The value the next node receives from this one."""
        return None

    # ---- names and ties ---------------------------------------------------------------------

    def claim(self, node: Node) -> None:
        """Enter the layer's ``name``; a name taken before or inside a Repeat is an error."""
        name = node.spec.name
        if name is None:
            return
        if node.repeat is not None:
            raise NamingError(
                ("name",),
                f"a layer inside a Repeat cannot be named ({name!r}): each copy would carry the name",
                {"got": name},
            )
        if name in self.named:
            first = self.named[name].node
            raise NamingError(
                ("name",),
                f"the name {name!r} is already taken by the {first.spec.type} at module path "
                f"'{first.path}'; names must be unique in the model",
                {"got": name, "taken_by": first.path},
            )
        self.named[name] = _Named(node)

    def tie_target(self, node: Node) -> Node | None:
        """The earlier layer whose ``tieable_weight`` this node's weight is (``tie_weight``), or None.

        Records the tie in ``tied`` (a tie to a tied layer is owned by the first owner)."""
        name = node.spec.weight_tie()
        if name is None:
            return None
        named = self.named.get(name)
        if named is None or not named.done:
            known = [n for n, entry in self.named.items() if entry.done]
            raise NamingError(
                ("tie_weight",),
                f"no layer before this one is named {name!r}"
                + (f" (named so far: {', '.join(known)})" if known else " (no layer is named so far)"),
                {"got": name, "names": known},
            )
        target = named.node
        weight = target.spec.tieable_weight
        if weight is None:
            tieable = [t for t, cls in LAYER_SPECS.items() if cls.tieable_weight]
            raise NamingError(
                ("tie_weight",),
                f"{name!r} is a {target.spec.type} (module path '{target.path}'), which has no "
                f"weight to tie to; tie to one of: {', '.join(tieable)}",
                {"got": target.spec.type, "expected": tieable},
            )
        assert node.spec.tieable_weight is not None  # a layer with a tie_weight field declares its weight
        self.tied[node.path] = {
            node.spec.tieable_weight: self.tied.get(target.path, {}).get(weight, target.path)
        }
        return target
