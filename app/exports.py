"""An export as the HTTP download that carries it, through the exporters' table (``layers.export``).

Both export routes (a spec's, a job's) come here. The exporter runs in the thread pool under a
trace slot (``app.core.traces``), and an export that runs the model for real (ONNX) is held to
the service's limits: its weights to ``MB_MAX_ARTIFACT_BYTES``, its example to
``MB_MAX_PREDICT_NUMEL`` numbers, and at most ``MB_MAX_CONCURRENT_EXPORTS`` at once.
"""

from __future__ import annotations

import threading

from fastapi import Request, Response

from app.analysis import trace
from app.core.config import settings
from app.core.traces import run_trace
from layers import ModelSpec
from layers.analysis.budget import TraceBudget
from layers.analysis.trace import InputDType
from layers.export import EXPORTERS, ExportLimits, Weights

_EXPORT_SLOTS = threading.BoundedSemaphore(settings.max_concurrent_exports)
FILES_CONTENT: dict[str, dict] = {exporter.media_type: {} for exporter in EXPORTERS.values()}  # for OpenAPI


async def export(
    http: Request,
    format: str,
    model: ModelSpec,
    input_shape: tuple[int, ...],
    input_dtype: InputDType,
    about: str,
    weights: Weights | None = None,
) -> bytes:
    """The file of ``format`` for ``model`` traced at ``input_shape``; errors located in the body."""
    exporter = EXPORTERS[format]
    limits = ExportLimits(settings.max_artifact_bytes, settings.max_predict_numel, _EXPORT_SLOTS)

    def write(cancelled: threading.Event) -> bytes:
        traced = trace(model, input_shape, input_dtype, TraceBudget(settings.max_trace_seconds, cancelled))
        return exporter.write(traced, about, weights, limits)

    return await run_trace(http, write)


def attachment(content: bytes, format: str, stem: str) -> Response:
    """A download: ``Content-Disposition: attachment`` (``stem`` is ours, never the user's)."""
    exporter = EXPORTERS[format]
    disposition = {"Content-Disposition": f'attachment; filename="{stem}.{exporter.suffix}"'}
    return Response(content, media_type=exporter.media_type, headers=disposition)
