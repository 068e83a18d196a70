"""A built model as an ONNX file: ``torch.onnx.export`` with the dynamo (``torch.export``)
exporter at opset 18, the batch dimension dynamic, checked with ``onnx.checker``.

The export runs a real model on an example input, so it is held to ``ExportLimits``: the model's
weights, the example's size, and a slot (at most so many exports at once; each takes seconds of
CPU). A model that does not export is located: its leaf layers are exported side by side on the
inputs they really receive, bisecting over prefixes (``_locate``), and the first that fails is
named at its spec ``loc``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn

from layers.analysis.params import weight_bytes
from layers.analysis.trace import TracedLayer, TracedModel
from layers.export.example import example_input, example_inputs, example_shape
from layers.language.errors import LimitError, SpecError
from layers.language.io import output_names

Example = torch.Tensor | dict[str, torch.Tensor]  # a sequence's input, or a graph's by name

OPSET = 18
EXPORTER = f"torch.onnx.export (dynamo=True, torch.export), opset {OPSET}"


class ExportFailed(SpecError):
    """A model torch cannot export to ONNX; ``loc`` names the layer when one is found."""

    error_type = "export_unsupported"


@dataclass(frozen=True)
class ExportLimits:
    """What an export that runs the model for real may take (None: no limit)."""

    weight_bytes: int | None = None  # of parameters and buffers
    example_numel: int | None = None  # numbers in the example input
    slot: AbstractContextManager = field(default_factory=contextlib.nullcontext)  # held while it runs


def onnx_file(
    traced: TracedModel, about: str, weights: Callable[[], nn.Module] | None, limits: ExportLimits
) -> bytes:
    """ONNX bytes of the trained module ``weights()`` loads, or of the spec's model freshly
    initialised (seed 0); ``about`` is for files with a docstring. Errors are located in what the
    export was asked for: ``model`` (the spec) or ``input_shape``."""
    size = weight_bytes(traced)
    if limits.weight_bytes is not None and size > limits.weight_bytes:
        raise LimitError(
            ("model",),
            f"the model's weights take {size} bytes; ONNX export is limited to {limits.weight_bytes}",
            {"limit": limits.weight_bytes, "got": size},
        )
    if traced.graph is None:
        shape = example_shape(traced)
        numel = math.prod(shape)
    else:
        shape = {name: list(t.shape) for name, t in example_inputs(traced).items()}
        numel = sum(math.prod(s) for s in shape.values())
    if limits.example_numel is not None and numel > limits.example_numel:
        raise LimitError(
            ("input_shape",) if traced.graph is None else ("model", "inputs"),
            f"the ONNX export runs the model on an example of shape {shape} ({numel} "
            f"numbers); the limit is {limits.example_numel}",
            {"limit": limits.example_numel, "got": numel},
        )
    example = example_input(traced) if traced.graph is None else example_inputs(traced)
    with limits.slot:
        if weights is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                module = traced.spec.build().to(traced.param_dtype)
        else:
            module = weights()
        module.train(False)  # inference mode: dropout off, batch norm on its running statistics
        try:
            return to_onnx(module, example, traced)
        except SpecError as e:
            raise e.under("model") from e


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter reports its steps on stdout and through warnings; the service answers instead."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(module: nn.Module, example: Example, dynamic_batch: bool) -> bytes:
    import onnx  # imported here: the ONNX stack loads only when a model is exported

    with _quiet():
        if isinstance(example, dict):  # a graph: named inputs and outputs, in their order
            batch = {0: torch.export.Dim.DYNAMIC}
            dynamic_graph = {"inputs": tuple(batch if t.dim() > 1 else None for t in example.values())}
            program = torch.onnx.export(
                _Positional(module, tuple(example)),
                tuple(example.values()),
                dynamo=True,
                opset_version=OPSET,
                input_names=list(example),
                output_names=list(output_names(module)),
                dynamic_shapes=dynamic_graph if dynamic_batch else None,
                external_data=False,
            )
        else:
            dynamic = ({0: torch.export.Dim.DYNAMIC},) if dynamic_batch and example.dim() > 1 else None
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=dynamic,
                external_data=False,
            )
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


class _Positional(nn.Module):
    """A graph module called with its inputs in order, its outputs returned in order: what
    torch.export takes (it cannot give dynamic shapes to ``forward(**inputs)``)."""

    def __init__(self, graph: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = graph
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(**dict(zip(self.names, inputs, strict=True))).values())


def _reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def to_onnx(model: nn.Module, example: Example, traced: TracedModel) -> bytes:
    """``model`` (real, in eval mode) as ONNX bytes, traced on ``example`` (any batch size is
    accepted by the file); raises ``ExportFailed`` naming the first layer that cannot export."""
    try:
        return _export(model, example, dynamic_batch=True)
    except Exception as error:
        node = _locate(model, example, traced)
        where = f"{node.spec.type} at module path '{node.path}'" if node else "the model"
        raise ExportFailed(
            node.loc if node else (),
            f"{where} cannot be exported to ONNX with {EXPORTER}: {_reason(error)}",
            {"exporter": EXPORTER, "layer": node.spec.type if node else None},
        ) from error


class _Leaves(nn.Module):
    """Leaf layers side by side, each on the input it receives in the model: what exports alone
    exports here, so a group fails exactly when one of its layers does."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(x) for layer, x in zip(self.layers, inputs, strict=True))


def _exports(modules: list[nn.Module], inputs: list[torch.Tensor]) -> bool:
    import onnx

    with _quiet():
        try:
            program = torch.onnx.export(
                _Leaves(modules), tuple(inputs), dynamo=True, opset_version=OPSET, external_data=False
            )
            onnx.checker.check_model(program.model_proto, full_check=True)
        except Exception:
            return False
    return True


def _locate(model: nn.Module, example: Example, traced: TracedModel) -> TracedLayer | None:
    """The first leaf layer that does not export alone, on the input it receives in the model:
    a bisection over prefixes of the leaves (each prefix exported side by side, one export), so
    ~log2(leaves) exports, not one a layer. Layers alike (a Repeat's copies) are tried once."""
    leaves = [node for node in traced.layers if not node.children]
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for node in leaves:
        module = model.get_submodule(node.path)

        def keep(_: nn.Module, args: tuple, path: str = node.path) -> None:
            inputs.setdefault(path, args[0] if len(args) == 1 else args)

        hooks.append(module.register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            model(**example) if isinstance(example, dict) else model(example)
    except Exception:
        pass  # the layers that ran have their inputs; a layer failing here is located below
    finally:
        for hook in hooks:
            hook.remove()
    ran = [node for node in leaves if node.path in inputs]
    if len(ran) < len(leaves):
        return leaves[len(ran)]  # it failed in the model itself
    seen: set[tuple] = set()
    distinct = []  # one of each (layer, input shape), in order
    for node in ran:
        if isinstance(inputs[node.path], tuple):  # a merge: its inputs are the graph's to export
            continue
        key = (node.spec.model_dump_json(), tuple(inputs[node.path].shape), inputs[node.path].dtype)
        if key not in seen:
            seen.add(key)
            distinct.append(node)
    modules = [model.get_submodule(node.path) for node in distinct]
    tensors = [inputs[node.path] for node in distinct]
    if _exports(modules, tensors):
        return None
    low, high = 0, len(distinct)  # the prefix of `high` fails; that of `low` exports
    while high - low > 1:
        middle = (low + high) // 2
        if _exports(modules[:middle], tensors[:middle]):
            low = middle
        else:
            high = middle
    return distinct[high - 1]
