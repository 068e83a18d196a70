"""A built model as an ONNX file: ``torch.onnx.export`` with the dynamo (``torch.export``)
exporter at opset 18, the batch dimension dynamic, checked with ``onnx.checker``.

A model that does not export is located: each layer is exported alone on the input it really
receives, and the first that fails is named in a ``ShapeError`` at its spec ``loc``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from layers.analysis.trace import TracedLayer, TracedModel
from layers.language.errors import SpecError

OPSET = 18
EXPORTER = f"torch.onnx.export (dynamo=True, torch.export), opset {OPSET}"


class ExportFailed(SpecError):
    """A model torch cannot export to ONNX; ``loc`` names the layer when one is found."""

    error_type = "export_unsupported"


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


def _export(module: nn.Module, example: torch.Tensor, dynamic_batch: bool) -> bytes:
    import onnx  # imported here: the ONNX stack loads only when a model is exported

    dynamic = ({0: torch.export.Dim.DYNAMIC},) if dynamic_batch and example.dim() > 1 else None
    with _quiet():
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


def _reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def to_onnx(model: nn.Module, example: torch.Tensor, traced: TracedModel) -> bytes:
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


def _locate(model: nn.Module, example: torch.Tensor, traced: TracedModel) -> TracedLayer | None:
    """The first leaf layer that does not export alone, on the input it receives in the model."""
    leaves = [node for node in traced.layers if not node.children]
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for node in leaves:
        module = model.get_submodule(node.path)

        def keep(_: nn.Module, args: tuple, path: str = node.path) -> None:
            inputs.setdefault(path, args[0])

        hooks.append(module.register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            model(example)
    except Exception:
        pass  # the layers that ran have their inputs; a layer failing here is located below
    finally:
        for hook in hooks:
            hook.remove()
    for node in leaves:
        if node.path not in inputs:
            return node
        try:
            _export(model.get_submodule(node.path), inputs[node.path], dynamic_batch=False)
        except Exception:
            return node
    return None
