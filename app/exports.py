"""A traced model as a downloadable file: Python code (``layers.export.codegen``) or ONNX
(``layers.export.onnx_export``), and the HTTP attachment that carries it.

Code needs only the meta trace. ONNX runs a real model on an example input, so the model's
weights are held to ``MB_MAX_ARTIFACT_BYTES``, the example to ``MB_MAX_PREDICT_NUMEL`` numbers,
and at most ``MB_MAX_CONCURRENT_EXPORTS`` exports run at once (each takes seconds of CPU).
"""

from __future__ import annotations

import math
import threading

import torch
from fastapi import Response
from torch import nn

from app.core.config import settings
from app.core.spec_limits import check_model
from layers import ModelSpec
from layers.analysis.trace import DTYPES, InputDType, TracedModel, trace_model
from layers.export.codegen import python_source
from layers.export.onnx_export import EXPORTER, to_onnx
from layers.language.errors import LimitError, SpecError

_EXPORT_SLOTS = threading.BoundedSemaphore(settings.max_concurrent_exports)
PYTHON_TYPE = "text/x-python"
ONNX_TYPE = "application/octet-stream"


def trace(spec: ModelSpec, input_shape: tuple[int, ...], input_dtype: InputDType) -> TracedModel:
    """The spec traced on meta within the service's limits; ``SpecError`` at ``model``."""
    check_model(spec)
    try:
        return trace_model(spec, input_shape, input_dtype, settings.max_trace_seconds)
    except SpecError as e:
        raise e.under("model") from e


def python_file(traced: TracedModel, input_dtype: InputDType, about: str) -> bytes:
    params = sum(p.numel() for p in traced.module.parameters())
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
    source = python_source(traced.spec, traced.input_shape, DTYPES[input_dtype], traced.param_dtype, header)
    return source.encode()


def example_input(traced: TracedModel, input_dtype: InputDType) -> torch.Tensor:
    """A random input for the ONNX trace: the traced shape with a batch of 2 (the file's batch
    dimension stays dynamic; torch.export specialises a batch of 1)."""
    shape = list(traced.input_shape)
    if len(shape) > 1:
        shape[0] = 2
    if math.prod(shape) > settings.max_predict_numel:
        raise LimitError(
            ("input_shape",),
            f"the ONNX export runs the model on an example of shape {shape} ({math.prod(shape)} numbers); "
            f"the limit is {settings.max_predict_numel}",
            {"limit": settings.max_predict_numel, "got": math.prod(shape)},
        )
    generator = torch.Generator().manual_seed(0)
    dtype = DTYPES[input_dtype]
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    sizes = [getattr(spec, "num_embeddings", None) for _, _, spec in traced.spec.walk()]
    vocabulary = min((n for n in sizes if isinstance(n, int)), default=2)
    return torch.randint(0, vocabulary, shape, generator=generator, dtype=dtype)


def onnx_file(traced: TracedModel, input_dtype: InputDType, module: nn.Module | None = None) -> bytes:
    """ONNX bytes of ``module`` (trained), or of the spec's model freshly initialised (seed 0).
    Errors are located in the request body (``model``, ``input_shape``)."""
    tensors = [*traced.module.parameters(), *traced.module.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    if weights > settings.max_artifact_bytes:
        raise LimitError(
            ("model",),
            f"the model's weights take {weights} bytes; ONNX export is limited to "
            f"{settings.max_artifact_bytes} (MB_MAX_ARTIFACT_BYTES)",
            {"limit": settings.max_artifact_bytes, "got": weights},
        )
    example = example_input(traced, input_dtype)
    with _EXPORT_SLOTS:
        if module is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                module = traced.spec.build().to(traced.param_dtype)
        module.eval()  # safe: nn.Module.eval(), inference mode for dropout and batch norm
        try:
            return to_onnx(module, example, traced)
        except SpecError as e:
            raise e.under("model") from e


def attachment(content: bytes, media_type: str, filename: str, **headers: str) -> Response:
    """A download: ``Content-Disposition: attachment`` (``filename`` is ours, never the user's)."""
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(content, media_type=media_type, headers={**disposition, **headers})


__all__ = ["EXPORTER", "attachment", "onnx_file", "python_file", "trace"]
