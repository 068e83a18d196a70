"""Datasets: upload a file once (streamed to disk), then read, list and delete it; owned per key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.api.deps import CallerDep, DatasetsDep
from app.core.traces import CLIENT_GONE
from app.datasets.errors import DatasetError
from app.datasets.images import Size
from app.datasets.upload import receive
from app.schemas.datasets import UPLOAD_BODY, DatasetPublic, DatasetsPublic

router = APIRouter(prefix="/datasets", tags=["datasets"])

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the store is down; retry after Retry-After"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such dataset (of this key)"},
    **UNAVAILABLE,
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"description": "this key already has these bytes: the stored dataset"},
    409: {"description": "these bytes are already stored with another `resize`"},
    413: {
        "description": "past MB_MAX_DATASET_BYTES or this key's MB_MAX_DATASETS_BYTES, or the disk is full"
    },
    415: {"description": "not multipart/form-data, or a file format it does not read"},
    422: {"description": "the file cannot be used: the array, column, cell or zip member is named"},
    **UNAVAILABLE,
}
DatasetId = Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="the dataset's sha256 (hex)")]
Resize = Annotated[
    str | None,
    Query(
        pattern="^[1-9][0-9]{0,3}x[1-9][0-9]{0,3}$",
        description="for a zip of images: the WIDTHxHEIGHT every image is resized to (else all must match)",
        examples=["32x32"],
    ),
]


@contextmanager
def _answering() -> Iterator[None]:
    """A refused upload or request as its 4xx, in FastAPI's error format."""
    try:
        yield
    except DatasetError as e:
        raise HTTPException(e.status, e.detail()) from e


@router.post("", status_code=201, openapi_extra=UPLOAD_BODY, responses=UPLOAD_ERRORS)
async def upload_dataset(
    request: Request, response: Response, caller: CallerDep, datasets: DatasetsDep, resize: Resize = None
) -> DatasetPublic:
    """Upload a dataset (multipart field `file`): 201 with its description, 200 if already stored."""
    size: Size | None = None
    if resize:
        width, height = resize.split("x")
        size = (int(width), int(height))
    with _answering():
        try:
            upload = await receive(request, datasets.files, datasets.limits.max_bytes)
        except ClientDisconnect as e:
            raise HTTPException(CLIENT_GONE, "the client went away") from e
        try:
            dataset, created = await run_in_threadpool(datasets.add, upload, caller, size)
        finally:
            upload.release()
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetPublic.of(dataset)


@router.get("", responses=UNAVAILABLE)
def list_datasets(
    datasets: DatasetsDep,
    caller: CallerDep,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DatasetsPublic:
    """The datasets of the caller's key (an admin's: all), newest first."""
    found, count = datasets.list(caller, offset, limit)
    return DatasetsPublic(data=[DatasetPublic.of(dataset) for dataset in found], count=count)


@router.get("/{dataset_id}", responses=NOT_FOUND)
def read_dataset(dataset_id: DatasetId, datasets: DatasetsDep, caller: CallerDep) -> DatasetPublic:
    """One dataset's description: arrays, shapes, dtypes, value ranges, classes."""
    with _answering():
        return DatasetPublic.of(datasets.get(dataset_id, caller))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={**NOT_FOUND, 409: {"description": "a queued or running job uses the dataset"}},
)
def delete_dataset(dataset_id: DatasetId, datasets: DatasetsDep, caller: CallerDep) -> Response:
    """Delete the caller's dataset (an admin's: every key's copy); its file goes with the last."""
    with _answering():
        datasets.delete(dataset_id, caller)
    return Response(status_code=204)
