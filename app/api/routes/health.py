"""Liveness and readiness."""

from __future__ import annotations

import torch
from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    device: str


def compute_device() -> str:
    """``cpu``, or the name of the CUDA device training would use."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz")
async def readyz() -> Readiness:
    """Readiness, with the compute device."""
    return Readiness(status="ready", device=compute_device())
