"""Model analysis: the summary of a spec traced on the meta device, and whether it fits a device."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from app.analysis import estimate, summary, trace
from app.core.cache import BytesLRU
from app.core.config import settings
from app.core.spec_limits import check_model
from app.core.traces import CLIENT_GONE, run_task
from app.examples import FIT_EXAMPLES, SUMMARY_EXAMPLES
from app.schemas.fit import BatchProbe, FitResult
from app.schemas.summary import FitRequest, ModelSummary, SummaryRequest
from layers.analysis.budget import TraceBudget, TraceCancelled
from layers.analysis.fit import NotBatchSeparable, largest_batch
from layers.language.errors import LimitError, SpecError

router = APIRouter(prefix="/models", tags=["models"])

ERRORS = {
    400: {"description": "the body is not text (FastAPI cannot decode it)"},
    413: {"description": "request body too large"},
    422: {"description": "invalid spec, a shape mismatch (naming the layer) or a limit exceeded"},
    503: {"description": "the trace worker died under this request (it was replaced): retry"},
}


# Serialized summaries keyed by the validated request's canonical JSON: the same spec is traced once.
_cache = BytesLRU(settings.summary_cache_bytes, settings.summary_cache_size)


def _summary_json(budget: TraceBudget, request: SummaryRequest) -> bytes:
    traced = trace(request.model, request.input_shape, request.input_dtype, budget)
    training = request.training
    memory = estimate(traced, training.optimizer, training.device, budget) if training else None
    return summary(traced, memory).model_dump_json().encode()


@router.post("/summary", responses=ERRORS, response_model=ModelSummary)
async def model_summary(
    request: Annotated[SummaryRequest, Body(openapi_examples=SUMMARY_EXAMPLES)], http: Request
) -> Response:
    """Everything PyTorch knows about the model, without allocating it."""
    check_model(request.model)
    try:
        key = request.model_dump_json()
        body = _cache.get(key)
        if body is None:
            body = await run_task(http, _summary_json, request)
            _cache.put(key, body)
    except TraceCancelled:
        return Response(status_code=CLIENT_GONE)
    return Response(body, media_type="application/json")


@router.post("/fit", responses=ERRORS, response_model=FitResult)
async def model_fit(
    request: Annotated[FitRequest, Body(openapi_examples=FIT_EXAMPLES)], http: Request
) -> Response | FitResult:
    """Whether a training step fits the device, and the largest batch that does (traced on meta)."""
    check_model(request.model)
    try:
        return await run_task(http, _fit, request)
    except TraceCancelled:
        return Response(status_code=CLIENT_GONE)


def _fit(budget: TraceBudget, request: FitRequest) -> FitResult:
    """The fit, in a trace worker (``app.core.traces.run_task``)."""
    traced = trace(request.model, request.input_shape, request.input_dtype, budget)
    at_input = estimate(traced, request.optimizer, request.device, budget, inference=False)
    memory = at_input.memory
    # Every input of a graph at the same batch (its dimension 0), each within the input limit.
    shapes = [t.shape for t in traced.graph.inputs.values()] if traced.graph else [traced.input_shape]
    sample_numel = max(math.prod(shape[1:]) for shape in shapes)
    max_batch = min(settings.max_input_dim, settings.max_input_numel // sample_numel)
    limit = request.device_memory_bytes
    try:
        fit = largest_batch(traced, request.optimizer, request.device, limit, max_batch, budget, at_input)
    except NotBatchSeparable:
        raise
    except SpecError as e:
        raise e.under("model") from e
    if fit.max_batch_size == 0:
        raise LimitError(
            ("device_memory_bytes",),
            f"even batch 1 does not fit: its training step peaks at {fit.probes[1]} bytes "
            f"({_breakdown(asdict(memory.breakdown))} at batch {traced.input_shape[0]}); "
            f"the device has {limit}",
            {"limit": limit, "batch_1_peak_bytes": fit.probes[1]},
        )
    return FitResult(
        fits=memory.training_peak_bytes <= limit,
        batch_size=traced.input_shape[0],
        training_peak_bytes=memory.training_peak_bytes,
        headroom_bytes=limit - memory.training_peak_bytes,
        breakdown=memory.breakdown,
        max_batch_size=fit.max_batch_size,
        max_batch_peak_bytes=fit.probes[fit.max_batch_size],
        probes=[BatchProbe(batch_size=b, training_peak_bytes=p) for b, p in sorted(fit.probes.items())],
        notes=memory.notes,
    )


def _breakdown(parts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in parts.items())
