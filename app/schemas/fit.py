"""Response schema of ``POST /v1/models/fit``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas.summary import MemoryBreakdown


class BatchProbe(BaseModel):
    batch_size: int
    training_peak_bytes: int


class FitResult(BaseModel):
    fits: bool = Field(description="whether a training step at the input shape's batch fits")
    batch_size: int = Field(description="the input shape's batch")
    training_peak_bytes: int = Field(description="the training peak at that batch")
    headroom_bytes: int = Field(description="device memory minus that peak (negative: it does not fit)")
    breakdown: MemoryBreakdown
    max_batch_size: int = Field(description="the largest batch whose training peak fits")
    max_batch_peak_bytes: int
    probes: list[BatchProbe] = Field(description="each batch size traced in the search, and its peak")
    notes: list[str] = Field(description="how layers torch cannot see into were measured")
