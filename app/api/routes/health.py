"""Liveness and readiness."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from app.jobs import ray_runtime
from app.jobs.store import StoreNotWritable, StoreUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    device: str
    ray: str = Field(
        description="training backend: up, starting (not yet able to start a job at once), down, or off"
    )
    warm_workers: int | None = Field(
        None, description="this API process's warm job actors, up and idle: the jobs that can start at once"
    )
    store: str = Field(
        "off", description="job store: up, not writable (it answers reads but refuses writes), down, or off"
    )
    database: str | None = Field(None, description="the job store's database (no password)")
    reason: str | None = Field(None, description="why the store is down or not writable")


def compute_device() -> str:
    """``cpu``, or the name of the CUDA device training would use."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


def ray_state(request: Request) -> str:
    engine = getattr(request.app.state, "jobs", None)
    if engine is None:
        return "off"  # the app runs without its lifespan: no training
    if not ray_runtime.started():
        return "starting"
    if not ray_runtime.alive():
        return "down"
    return "up" if engine.pool.ready() else "starting"  # until a warm job actor is up


def store_state(request: Request) -> tuple[str, str | None, str | None]:
    """The job store: its state, its database and, when down or not writable, why."""
    engine = getattr(request.app.state, "jobs", None)
    if engine is None:
        return "off", None, None
    try:
        database = engine.ping()
    except StoreNotWritable as e:
        return "not writable", e.database, e.reason
    except StoreUnavailable as e:
        return "down", e.database, e.reason
    return "up", database, None


@router.get(
    "/readyz",
    responses={503: {"description": "not ready: Ray or the job store is down, or the store takes no writes"}},
)
async def readyz(request: Request, response: Response) -> Readiness:
    """Readiness, with the compute device; 503 once Ray, started, stops answering, or while the
    job store's database does not answer or refuses writes."""
    ray = await run_in_threadpool(ray_state, request)
    engine = getattr(request.app.state, "jobs", None)
    store, database, reason = await run_in_threadpool(store_state, request)
    ready = ray != "down" and store in ("up", "off")
    if not ready:
        response.status_code = 503
    return Readiness(
        status="ready" if ready else "not ready",
        device=compute_device(),
        ray=ray,
        warm_workers=engine.pool.idle() if engine is not None else None,
        store=store,
        database=database,
        reason=reason,
    )
