"""Training jobs: submit, follow (JSON or Server-Sent Events), list, cancel, or train and wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.deps import CallerDep, DatasetsDep, EngineDep, JobDep
from app.core.config import settings
from app.core.security import Caller
from app.core.traces import run_trace
from app.datasets.description import Description
from app.datasets.errors import DatasetError
from app.datasets.service import Datasets
from app.datasets.uploaded import UploadedDataset
from app.examples import JOB_EXAMPLES
from app.jobs.domain import TERMINAL, Job
from app.jobs.engine import BackendDown, JobEngine, QueueFull
from app.jobs.plan import JobPlan, plan_job
from app.jobs.store import StoreUnavailable
from app.schemas.jobs import JobCreate, JobPublic, JobsPublic
from layers.analysis.budget import TraceCancelled

router = APIRouter(tags=["jobs"])

POLL_S = 0.2
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, but the access log does
LAST_EVENT_ID = "^[0-9]{1,18}$"  # an event id we sent: ASCII digits that fit SQLite's integer
RETRY_AFTER_S = 5
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON"},
    404: {"description": "no uploaded dataset of this id (of this key)"},
    413: {"description": "request body too large"},
    422: {"description": "invalid job: a field, a shape mismatch naming the layer, or a limit"},
    429: {"description": "too many jobs queued or running, or rate limited; retry after Retry-After seconds"},
    503: {"description": "the training backend (Ray) or the job store is down; retry after Retry-After"},
}
JobBody = Annotated[JobCreate, Body(openapi_examples=JOB_EXAMPLES)]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: ERRORS[503]}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such job"}, **UNAVAILABLE}


def _links(job_id: str, **operations: str) -> dict[str, Any]:
    """OpenAPI links to the operations on one job (``{name: "METHOD /v1/jobs/{job_id}..."}``),
    its id from the runtime expression ``job_id``: clients and stateful fuzzers follow them."""
    links = {}
    for name, operation in operations.items():
        method, path = operation.split(" ")
        ref = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()
        links[name] = {"operationRef": ref, "parameters": {"job_id": job_id}}
    return links


READ, CANCEL, DELETE = "GET /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/cancel", "DELETE /v1/jobs/{job_id}"
NEW_JOB_LINKS = _links("$response.body#/id", ReadJob=READ, CancelJob=CANCEL, DeleteJob=DELETE)
SAME_JOB_LINKS = _links("$request.path.job_id", ReadJob=READ, DeleteJob=DELETE)
LISTED_JOB_LINKS = _links("$response.body#/data/0/id", ReadJob=READ, CancelJob=CANCEL, DeleteJob=DELETE)


async def _submit(
    job: JobCreate, engine: JobEngine, datasets: Datasets, caller: Caller, http: Request
) -> Job:
    """Check and queue ``job``: the queued job (a ``SpecError`` is a 422). The plan traces the
    model, so it takes a trace slot like a summary."""
    uploaded = await run_in_threadpool(_uploaded, job, datasets, caller)
    try:
        plan: JobPlan = await run_trace(http, lambda cancelled: plan_job(job, cancelled, uploaded))
    except TraceCancelled as e:
        raise HTTPException(CLIENT_GONE, "the client went away") from e
    try:
        return await run_in_threadpool(engine.submit, plan.job, plan, caller.owner)
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": str(RETRY_AFTER_S)}) from e
    except BackendDown as e:
        raise HTTPException(503, str(e), headers={"Retry-After": str(RETRY_AFTER_S)}) from e


def _uploaded(job: JobCreate, datasets: Datasets, caller: Caller) -> Description | None:
    """The stored description of the job's uploaded dataset: the caller's own, else a 404."""
    if not isinstance(job.dataset, UploadedDataset):
        return None
    try:
        return datasets.get(job.dataset.id, caller).description
    except DatasetError as e:
        e.loc = ("body", "dataset", "id")
        raise HTTPException(e.status, e.detail()) from e


@router.post("/jobs", status_code=202, responses={**ERRORS, 202: {"links": NEW_JOB_LINKS}})
async def create_job(
    job: JobBody,
    engine: EngineDep,
    datasets: DatasetsDep,
    caller: CallerDep,
    http: Request,
    response: Response,
) -> JobPublic:
    """Queue a training run; follow it at /v1/jobs/{id} or /v1/jobs/{id}/events."""
    submitted = await _submit(job, engine, datasets, caller, http)
    response.headers["Location"] = f"/v1/jobs/{submitted.id}"
    return JobPublic.of(submitted)


@router.get("/jobs", responses={**UNAVAILABLE, 200: {"links": LISTED_JOB_LINKS}})  # links: the newest
def list_jobs(
    engine: EngineDep,
    caller: CallerDep,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobsPublic:
    """Recent jobs of the caller's key (an admin's: all), newest first, without their requests."""
    jobs, count = engine.jobs(offset, limit, owner=None if caller.admin else caller.owner)
    return JobsPublic(data=[JobPublic.of(job) for job in jobs], count=count)


@router.get("/jobs/{job_id}", responses=NOT_FOUND)
def read_job(job: JobDep) -> JobPublic:
    """One job: status, device, per-epoch history, metrics, error."""
    return JobPublic.of(job)


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    responses={
        **NOT_FOUND,
        202: {"links": SAME_JOB_LINKS},
        409: {"description": "the job already finished"},
        413: ERRORS[413],  # it takes no body, but the body limit holds for every POST
    },
)
def cancel_job(job: JobDep, engine: EngineDep) -> JobPublic:
    """Cancel a queued or running job: 202 with the job, now `cancelled` (its worker is being
    stopped). Of several concurrent cancels (from any API process) one wins; the others get 409."""
    if not engine.cancel(job.id):
        current = engine.job(job.id, with_request=False)
        if current is None:
            raise HTTPException(404, f"no job {job.id!r}")
        raise HTTPException(409, f"job {job.id} already finished ({current.status})")
    return JobPublic.of(engine.job(job.id))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    responses={
        **NOT_FOUND,
        204: {"links": SAME_JOB_LINKS},  # each must now answer 404
        409: {"description": "the job is still queued or running: cancel it first"},
    },
)
def delete_job(job: JobDep, engine: EngineDep) -> Response:
    """Delete a finished job with everything stored with it (its request, events and files)."""
    if job.status not in TERMINAL:
        raise HTTPException(409, f"job {job.id} is {job.status}: cancel it first (POST .../cancel)")
    if not engine.delete(job):
        raise HTTPException(404, f"no job {job.id!r}")  # another request deleted it meanwhile
    return Response(status_code=204)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse, responses=NOT_FOUND)
async def job_events(
    job: JobDep,
    engine: EngineDep,
    last_event_id: Annotated[
        str,  # noqa: RUF013 (not `str | None`: a header is absent or a string; the schema offers no null)
        Header(alias="Last-Event-ID", pattern=LAST_EVENT_ID, description="resume after this event id"),
    ] = None,  # absent
) -> AsyncIterator[ServerSentEvent]:
    """Live progress as Server-Sent Events: `progress` (step, epoch, loss) every N steps, `epoch`
    after each epoch, then one `done` event carrying the finished job."""
    job_id = job.id
    seq = int(last_event_id) if last_event_id else 0
    while True:
        try:
            events = await run_in_threadpool(engine.events_after, job_id, seq)
            current = None if events else await run_in_threadpool(engine.job, job_id, with_request=False)
            late = []
            if current is not None and current.status in TERMINAL:
                # Events written between the last poll and the finish come before the final one.
                late = await run_in_threadpool(engine.events_after, job_id, seq)
                current = await run_in_threadpool(engine.job, job_id)
        except StoreUnavailable:  # the store already retried: keep the stream, poll again later
            await asyncio.sleep(RETRY_AFTER_S)
            continue
        for seq, kind, data in events + late:  # seq carries over to the next poll
            yield ServerSentEvent(data=data, event=kind, id=str(seq))
        if events:
            continue
        if current is None:  # deleted meanwhile
            return
        if current.status in TERMINAL:
            finished = JobPublic.of(current).model_dump(mode="json")
            yield ServerSentEvent(data=finished, event="done")
            return
        await asyncio.sleep(POLL_S)


@router.post(
    "/train",
    responses={
        **ERRORS,
        200: {"links": NEW_JOB_LINKS},
        202: {"description": "still running after the wait; poll /v1/jobs/{id}", "links": NEW_JOB_LINKS},
    },
)
async def train_and_wait(
    job: JobBody,
    engine: EngineDep,
    datasets: DatasetsDep,
    caller: CallerDep,
    http: Request,
    response: Response,
) -> JobPublic:
    """Train and wait for the result (at most MB_TRAIN_WAIT_SECONDS; then 202 with the running job)."""
    submitted = await _submit(job, engine, datasets, caller, http)
    deadline = time.monotonic() + settings.train_wait_seconds
    job_id = submitted.id
    while True:
        current = await run_in_threadpool(engine.job, job_id)
        if current is None:
            raise HTTPException(404, f"job {job_id} was deleted while it was awaited")
        if current.status in TERMINAL:
            return JobPublic.of(current)
        if time.monotonic() > deadline:
            response.status_code = 202
            response.headers["Location"] = f"/v1/jobs/{job_id}"
            return JobPublic.of(current)
        await asyncio.sleep(POLL_S)
