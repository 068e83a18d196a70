"""An export as the HTTP download that carries it, through the exporters' table (``layers.export``).

Both export routes (a spec's, a job's) come here. The model is checked against the limits, then
traced and written in the thread pool under a trace slot (``app.core.traces``); an export that
runs the model for real (ONNX) is held to the service's limits: its weights to
``MB_MAX_ARTIFACT_BYTES``, its example to ``MB_MAX_PREDICT_NUMEL`` numbers, and at most
``MB_MAX_CONCURRENT_EXPORTS`` at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import Request, Response

from app.analysis import trace
from app.core.config import settings
from app.core.spec_limits import check_model
from app.core.traces import CLIENT_GONE, run_trace
from layers import GraphSpec, ModelSpec
from layers.analysis.budget import TraceBudget, TraceCancelled
from layers.analysis.trace import InputDType
from layers.export import EXPORTERS, ExportLimits, Weights

_EXPORT_SLOTS = threading.BoundedSemaphore(settings.max_concurrent_exports)
FILES_CONTENT: dict[str, dict] = {exporter.media_type: {} for exporter in EXPORTERS.values()}  # for OpenAPI


@dataclass(frozen=True)
class Download:
    """What to export: the model, the input it is traced for, and what the file says it is."""

    model: ModelSpec | GraphSpec
    input_shape: tuple[int, ...] | None  # None for a graph (its shapes are in its inputs)
    input_dtype: InputDType
    about: str  # the file's own description (the code's docstring)
    stem: str  # the file name without its suffix: ours, never the user's
    weights: Weights | None = None  # loads the trained module, for the formats that carry weights


async def download(http: Request, format: str, what: Download) -> Response:
    """The file of ``format`` as an attachment; errors are located in the request body."""
    exporter = EXPORTERS[format]
    limits = ExportLimits(settings.max_artifact_bytes, settings.max_predict_numel, _EXPORT_SLOTS)
    check_model(what.model)

    def write(cancelled: threading.Event) -> bytes:
        budget = TraceBudget(settings.max_trace_seconds, cancelled)
        traced = trace(what.model, what.input_shape, what.input_dtype, budget)
        return exporter.write(traced, what.about, what.weights, limits)

    try:
        content = await run_trace(http, write)
    except TraceCancelled:
        return Response(status_code=CLIENT_GONE)
    disposition = f'attachment; filename="{what.stem}.{exporter.suffix}"'
    return Response(content, media_type=exporter.media_type, headers={"Content-Disposition": disposition})
