"""Dependencies of the routes, as ``Annotated`` aliases: the API lock (key and rate limit), the
job engine (the routes' only way to the jobs), one job of the caller's, and the datasets."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.core.security import API_KEY_HEADER, APILock, Caller
from app.datasets.service import Datasets
from app.jobs.domain import Job
from app.jobs.engine import JobEngine

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="required when the server has keys (MB_API_KEYS); jobs belong to the key that created them",
)


def get_lock(request: Request) -> APILock:
    return request.app.state.api_lock


async def guard(
    request: Request,
    lock: Annotated[APILock, Depends(get_lock)],
    key: Annotated[str | None, Security(api_key_header)],
) -> Caller:
    """Rate-limits, then checks the key of, a request to a guarded router; returns the caller.

    A client is its key when the key is valid, else its address (the real peer: see the README on
    ``--forwarded-allow-ips``), so a client guessing keys is limited by address.
    """
    caller = lock.caller(key)
    if lock.buckets is not None:
        client = f"key:{caller.owner}" if caller and caller.owner else f"addr:{_peer(request)}"
        wait = lock.buckets.take(client)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            msg = f"too many requests; retry in {retry_after} s"
            detail = [{"type": "rate_limited", "loc": ["request"], "msg": msg}]
            raise HTTPException(429, detail, headers={"Retry-After": str(retry_after)})
    if caller is None:
        msg = f"a valid API key is required in the {API_KEY_HEADER.lower()!r} header"
        detail = [{"type": "api_key_invalid", "loc": ["header", API_KEY_HEADER.lower()], "msg": msg}]
        raise HTTPException(401, detail, headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'})
    return caller


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


CallerDep = Annotated[Caller, Depends(guard)]
# What ``guard`` may answer, for the OpenAPI responses of the routers it guards.
GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "an API key is required (the server has MB_API_KEYS) and none valid was sent"},
    429: {"description": "rate limited (MB_RATE_LIMIT_PER_S); retry after Retry-After seconds"},
}


def get_engine(request: Request) -> JobEngine:
    engine = getattr(request.app.state, "jobs", None)
    if engine is None:
        raise HTTPException(503, "training jobs are not available: the app was started without its lifespan")
    return engine


EngineDep = Annotated[JobEngine, Depends(get_engine)]


def get_job(job_id: str, engine: EngineDep, caller: CallerDep) -> Job:
    """The job, if it exists and ``caller`` may see it: its creator's key, or an admin's.
    Another key's job is a 404, as if it did not exist (and it is not read: the store filters by
    owner)."""
    job = engine.job(job_id, owner=None if caller.admin else caller.owner)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_datasets(request: Request) -> Datasets:
    """Datasets over the job store's database (the app's lifespan opens it)."""
    return Datasets.from_settings(get_engine(request).store)


DatasetsDep = Annotated[Datasets, Depends(get_datasets)]
