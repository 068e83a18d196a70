"""Model analysis: the summary of a spec, traced on the meta device."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Body

from app.core.config import settings
from app.examples import SUMMARY_EXAMPLES
from app.schemas.summary import SummaryRequest
from layers.errors import SpecError
from layers.summary import ModelSummary, summarize

router = APIRouter(prefix="/v1/models", tags=["models"])

ERRORS = {
    400: {"description": "the body is not text (FastAPI cannot decode it)"},
    413: {"description": "request body too large"},
    422: {"description": "invalid spec, a shape mismatch (naming the layer) or a limit exceeded"},
}


# Tracing is CPU-bound Python: threads tracing at once only contend for the GIL (32 at once ran at
# 2/3 of the throughput of one at a time, bench/README.md). Extra requests wait here, off the GIL.
_TRACE_SLOTS = threading.BoundedSemaphore(settings.max_concurrent_traces)


@lru_cache(maxsize=settings.summary_cache_size)
def _cached_summary(request_json: str) -> ModelSummary:
    # Keyed by the validated request's canonical JSON: the same spec is traced once.
    request = SummaryRequest.model_validate_json(request_json)
    with _TRACE_SLOTS:
        return summarize(
            request.model, tuple(request.input_shape), request.input_dtype, settings.max_trace_seconds
        )


@router.post("/summary", responses=ERRORS)
def model_summary(
    request: Annotated[SummaryRequest, Body(openapi_examples=SUMMARY_EXAMPLES)],
) -> ModelSummary:
    """Everything PyTorch knows about the model, without allocating it."""
    try:
        request.model.check_limits(settings.max_layers, settings.max_nesting)
        return _cached_summary(request.model_dump_json())
    except SpecError as e:
        raise e.under("model") from e
