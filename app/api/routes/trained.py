"""A succeeded job's trained model: its weights (safetensors), its export, and predictions."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from app.api.deps import CallerDep, DatasetsDep, JobDep
from app.core.config import settings
from app.core.files import OpenFileResponse
from app.datasets.errors import DatasetError
from app.exports import FILES_CONTENT, Download, download
from app.jobs.domain import ACTIVE, Job, JobStatus
from app.jobs.retention import being_deleted, job_dir
from app.jobs.trained import MODELS, POOL, dataset_spec, predict, predict_dataset
from app.jobs.weights import WEIGHTS_FILE, stored_spec, trained_module, weights_info
from app.schemas.export import (
    FORMAT_DESCRIPTION,
    ExportFormat,
    PredictDataset,
    PredictRequest,
    PredictResponse,
)
from app.schemas.jobs import JobCreate
from layers import GraphSpec, ModelSpec
from layers.analysis.trace import InputDType

router = APIRouter(prefix="/jobs", tags=["trained models"])

NO_WEIGHTS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such job, or it failed or was cancelled and has no weights"},
    409: {"description": "the job has not finished yet"},
    503: {"description": "the job store is down; retry after Retry-After"},
}


@dataclass(frozen=True)
class Weights:
    job: Job
    path: Path
    sha256: str
    size_bytes: int


def get_weights(job: JobDep) -> Weights:
    """The weights of a succeeded job; 409 while it runs, 404 when it ended without any."""
    job_id, status = job.id, job.status
    if status in ACTIVE:
        raise HTTPException(409, f"job {job_id} is {status}: its weights exist once it has succeeded")
    if status != JobStatus.SUCCEEDED:
        reason = f" ({job.error})" if job.error else ""
        raise HTTPException(404, f"job {job_id} {status}{reason}: it has no trained weights")
    directory = job_dir(job_id)
    info = weights_info(directory)
    if info is None and being_deleted(job_id):  # its row is still there, its files are not
        raise HTTPException(404, f"no job {job_id!r} (it is being deleted)")
    if info is None:
        raise HTTPException(
            404, f"job {job_id} succeeded but kept no weights (it ran before weights were kept)"
        )
    return Weights(job, directory / WEIGHTS_FILE, info["sha256"], info["size_bytes"])


WeightsDep = Annotated[Weights, Depends(get_weights)]


@contextmanager
def _still_there(weights: Weights) -> Iterator[None]:
    """A DELETE of the job racing this read removed its files: the 404 the job answers now."""
    try:
        yield
    except FileNotFoundError as e:
        raise HTTPException(404, f"no job {weights.job.id!r} (it was deleted meanwhile)") from e


@router.get(
    "/{job_id}/weights",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the ranges asked for (a Range header)"},
        304: {"description": "not modified"},
        400: {"description": "a Range header that is not `bytes=` ranges"},
        416: {"description": "a Range past the end of the file"},
        **NO_WEIGHTS,
    },
)
def download_weights(weights: WeightsDep, request: Request) -> Response:
    """The trained weights as safetensors (keys: the module's state_dict; metadata: spec, torch, job)."""
    etag = f'"{weights.sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    with _still_there(weights):
        file = open(weights.path, "rb")  # noqa: SIM115 (the response closes it, once it is sent)
    return OpenFileResponse(
        file,
        media_type="application/octet-stream",
        filename=f"{weights.job.id}.safetensors",
        headers={"ETag": etag},
    )


def _job_model(weights: Weights) -> tuple[ModelSpec | GraphSpec, tuple[int, ...] | None, InputDType]:
    """The job's model as it was trained, and its traced input: a training batch of its dataset's
    samples, and their dtype (a graph: its inputs at the training batch, in the stored spec)."""
    spec = stored_spec(weights.path)
    if isinstance(spec, GraphSpec):
        return spec, None, "float32"
    request = JobCreate.model_validate(weights.job.request)
    info = request.dataset.describe(request.loss_of_sequence().task == "classification", settings)
    return spec, (request.batch_size, *info.sample_shape), info.dtype


@router.get(
    "/{job_id}/export",
    response_class=Response,
    responses={
        200: {"content": FILES_CONTENT},
        **NO_WEIGHTS,
        422: {"description": "ONNX cannot export a layer (named)"},
    },
)
async def export_job(
    weights: WeightsDep,
    http: Request,
    format: Annotated[ExportFormat, Query(description=FORMAT_DESCRIPTION)] = "pytorch",
) -> Response:
    """The trained model as Python code (weights: GET /v1/jobs/{id}/weights) or ONNX (weights inside)."""
    with _still_there(weights):  # a DELETE racing the export
        spec, input_shape, dtype = await run_in_threadpool(_job_model, weights)  # a request may be large
        job_id = weights.job.id
        about = (
            f"The model of Model Builder job {job_id}. Its trained weights: GET /v1/jobs/{job_id}/weights\n"
            f"(safetensors, sha256 {weights.sha256})."
        )
        trained = functools.partial(trained_module, weights.path)  # loaded only by the formats with weights
        return await download(http, format, Download(spec, input_shape, dtype, about, job_id, trained))


@router.post(
    "/{job_id}/predict",
    responses={
        **NO_WEIGHTS,
        400: {"description": "the body is not JSON"},
        404: {"description": "no such job or dataset (of this key)"},
        413: {"description": "request body too large"},
        422: {
            "description": "inputs of the wrong shape or type, or too many; dataset arrays that do not fit"
        },
    },
)
async def predict_job(
    body: PredictRequest, weights: WeightsDep, datasets: DatasetsDep, caller: CallerDep
) -> PredictResponse:
    """Run the trained model on one sample, a batch, or an uploaded dataset (classification:
    predictions and probabilities; a dataset with targets: the accuracy or loss)."""
    asked = body.dataset_request()

    def run() -> dict[str, Any]:
        model = MODELS.get(weights.job, weights.path, weights.sha256)
        if asked is None:
            return predict(model, body.inputs)
        try:
            stored = datasets.get(asked.id, caller)
        except DatasetError as e:
            e.loc = (
                ("body", "dataset", "id") if isinstance(body.dataset, PredictDataset) else ("body", "dataset")
            )
            raise HTTPException(e.status, e.detail()) from e
        spec, with_targets = dataset_spec(model, asked, stored.description)
        return predict_dataset(model, spec, with_targets, datasets.files.path(asked.id))

    with _still_there(weights):
        answer = await asyncio.wrap_future(POOL.submit(run))
    return PredictResponse.model_validate(answer)
