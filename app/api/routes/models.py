"""Model analysis: the summary of a spec traced on the meta device, and whether it fits a device."""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Body

from app.core.config import settings
from app.examples import FIT_EXAMPLES, SUMMARY_EXAMPLES
from app.schemas.fit import BatchProbe, FitResult
from app.schemas.summary import FitRequest, SummaryRequest
from layers.errors import LimitError, SpecError
from layers.fit import largest_batch
from layers.memory import estimate_memory
from layers.summary import ModelSummary, summarize
from layers.trace import trace_model

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
    training = request.training
    with _TRACE_SLOTS:
        return summarize(
            request.model,
            tuple(request.input_shape),
            request.input_dtype,
            settings.max_trace_seconds,
            optimizer=training.optimizer if training else None,
            device=training.device if training else "cuda",
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


@router.post("/fit", responses=ERRORS)
def model_fit(request: Annotated[FitRequest, Body(openapi_examples=FIT_EXAMPLES)]) -> FitResult:
    """Whether a training step fits the device, and the largest batch that does (traced on meta)."""
    try:
        request.model.check_limits(settings.max_layers, settings.max_nesting)
    except SpecError as e:
        raise e.under("model") from e
    budget = settings.max_trace_seconds
    with _TRACE_SLOTS:
        deadline = time.thread_time() + budget
        try:
            traced = trace_model(request.model, tuple(request.input_shape), request.input_dtype, budget)
            estimate = estimate_memory(
                traced, request.optimizer, request.device, deadline=deadline, budget_s=budget, inference=False
            )
            sample_numel = math.prod(traced.input_shape[1:])
            max_batch = min(settings.max_input_dim, settings.max_input_numel // sample_numel)
            fit = largest_batch(
                traced,
                request.optimizer,
                request.device,
                request.device_memory_bytes,
                max_batch,
                deadline,
                budget,
            )
        except SpecError as e:
            raise e.under("model") from e
    memory = estimate.memory
    limit = request.device_memory_bytes
    if fit.max_batch_size == 0:
        raise LimitError(
            ("device_memory_bytes",),
            f"even batch 1 does not fit: its training step peaks at {fit.probes[1]} bytes "
            f"({_breakdown(estimate.memory.breakdown.model_dump())} at batch {traced.input_shape[0]}); "
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
