"""Model analysis: the summary of a spec, traced on the meta device."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response

from app.api.deps import GUARD_RESPONSES, guard
from app.core.cache import BytesLRU
from app.core.config import settings
from app.core.traces import run_trace
from app.examples import SUMMARY_EXAMPLES
from app.schemas.summary import SummaryRequest
from layers.budget import TraceCancelled
from layers.errors import SpecError
from layers.summary import ModelSummary, summarize

router = APIRouter(
    prefix="/v1/models", tags=["models"], dependencies=[Depends(guard)], responses=GUARD_RESPONSES
)

ERRORS = {
    400: {"description": "the body is not text (FastAPI cannot decode it)"},
    413: {"description": "request body too large"},
    422: {"description": "invalid spec, a shape mismatch (naming the layer) or a limit exceeded"},
}
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, but the access log does

# Serialized summaries keyed by the validated request's canonical JSON: the same spec is traced once.
_cache = BytesLRU(settings.summary_cache_bytes, settings.summary_cache_size)


def _summary_json(request: SummaryRequest, cancelled: threading.Event) -> bytes:
    summary = summarize(
        request.model, tuple(request.input_shape), request.input_dtype, settings.max_trace_seconds, cancelled
    )
    return summary.model_dump_json().encode()


@router.post("/summary", responses=ERRORS, response_model=ModelSummary)
async def model_summary(
    request: Annotated[SummaryRequest, Body(openapi_examples=SUMMARY_EXAMPLES)], http: Request
) -> Response:
    """Everything PyTorch knows about the model, without allocating it."""
    try:
        request.model.check_limits(settings.max_layers, settings.max_nesting)
        key = request.model_dump_json()
        body = _cache.get(key)
        if body is None:
            body = await run_trace(http, lambda cancelled: _summary_json(request, cancelled))
            _cache.put(key, body)
    except SpecError as e:
        raise e.under("model") from e
    except TraceCancelled:
        return Response(status_code=CLIENT_GONE)
    return Response(body, media_type="application/json")
