"""An export as the HTTP download that carries it, through the exporters' table (``layers.export``).

Both export routes (a spec's, a job's) come here. The model is checked against the limits, then
traced and written under a trace slot, in a trace worker (``app.core.traces.run_task``) within
``MB_MAX_EXPORT_SECONDS``: the worker writes the file under ``MB_DATA_DIR/exports`` and the API
streams it, then deletes it, so a 1 GiB file never enters the API process. An export that
runs the model for real (ONNX) is held to the service's limits: its weights to
``MB_MAX_ARTIFACT_BYTES``, its example to ``MB_MAX_PREDICT_NUMEL`` numbers, and at most
``MB_MAX_CONCURRENT_EXPORTS`` at once in one process.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from app.analysis import trace
from app.core.config import settings
from app.core.spec_limits import check_model
from app.core.traces import CLIENT_GONE, run_task
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


def write_export(budget: TraceBudget, format: str, what: Download) -> Path:
    """The file of ``format`` written to a new path under ``MB_DATA_DIR/exports`` (a task of
    ``run_task``: in a trace worker)."""
    exporter = EXPORTERS[format]
    limits = ExportLimits(settings.max_artifact_bytes, settings.max_predict_numel, _EXPORT_SLOTS)
    traced = trace(what.model, what.input_shape, what.input_dtype, budget)
    content = exporter.write(traced, what.about, what.weights, limits)
    folder = settings.data_dir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.{exporter.suffix}"
    try:
        path.write_bytes(content)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


async def download(http: Request, format: str, what: Download) -> Response:
    """The file of ``format`` as an attachment, streamed from its temporary file; errors are
    located in the request body."""
    exporter = EXPORTERS[format]
    check_model(what.model)
    try:
        budget = (settings.max_export_seconds, "MB_MAX_EXPORT_SECONDS")
        path = await run_task(http, write_export, format, what, seconds=budget)
    except TraceCancelled:
        return Response(status_code=CLIENT_GONE)
    return FileResponse(
        path,
        media_type=exporter.media_type,
        filename=f"{what.stem}.{exporter.suffix}",
        background=BackgroundTask(_remove, path),
    )
