"""Exports of a traced model, one per format, in the one table both export routes use.

Adding a format is one module here with a function of the ``Exporter.write`` shape, and its
entry in ``EXPORTERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from layers.analysis.trace import TracedModel
from layers.export.codegen import python_file
from layers.export.onnx_export import OPSET, ExportLimits, onnx_file

Weights = Callable[[], nn.Module]  # loads the trained module, for the formats that carry weights


@dataclass(frozen=True)
class Exporter:
    description: str
    media_type: str
    suffix: str  # of the file name
    # (traced model, what the file is, its trained weights or None, limits) -> the file.
    write: Callable[[TracedModel, str, Weights | None, ExportLimits], bytes]


def _python(traced: TracedModel, about: str, weights: Weights | None, limits: ExportLimits) -> bytes:
    return python_file(traced, about)  # code only: the weights travel apart, nothing runs


EXPORTERS: dict[str, Exporter] = {
    "pytorch": Exporter(
        "one Python file importing only torch, with build_model()", "text/x-python", "py", _python
    ),
    "onnx": Exporter(
        f"an ONNX file (torch.onnx.export, dynamo exporter, opset {OPSET}, dynamic batch)",
        "application/octet-stream",
        "onnx",
        onnx_file,
    ),
}

__all__ = ["EXPORTERS", "ExportLimits", "Exporter", "Weights"]
