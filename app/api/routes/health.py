"""Liveness and readiness."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from app.jobs import ray_runtime

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    device: str
    ray: str = Field(description="training backend: up, starting (not connected yet), down, or off")


def compute_device() -> str:
    """``cpu``, or the name of the CUDA device training would use."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


def ray_state(request: Request) -> str:
    if getattr(request.app.state, "jobs", None) is None:
        return "off"  # the app runs without its lifespan: no training
    if not ray_runtime.started():
        return "starting"
    return "up" if ray_runtime.alive() else "down"


@router.get("/readyz", responses={503: {"description": "not ready: Ray is down"}})
async def readyz(request: Request, response: Response) -> Readiness:
    """Readiness, with the compute device; 503 once Ray, started, stops answering."""
    ray = await run_in_threadpool(ray_state, request)
    if ray == "down":
        response.status_code = 503
    return Readiness(status="not ready" if ray == "down" else "ready", device=compute_device(), ray=ray)
