"""Schemas of the dataset endpoints: ``DatasetPublic`` (a description with its id) and
``DatasetsPublic``; the upload itself is ``multipart/form-data`` (``UPLOAD_BODY``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from app.datasets.description import Description
from app.datasets.store import Dataset

# The request body, declared by hand: the route streams it to disk instead of letting FastAPI
# parse it (FastAPI's UploadFile would spool it whole first). Swagger UI renders a file picker.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "NPZ, safetensors, CSV, Parquet, or a zip of PNG/JPEG images "
                            "in one folder per class; the format is read from the content",
                        }
                    },
                }
            }
        },
    }
}


class DatasetPublic(Description):
    id: str = Field(description="the sha256 of the file (hex): the same bytes are the same dataset")
    sha256: str
    name: str = Field(description="the uploaded file's name, for display")
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetPublic:
        return cls(
            **dataset.description.model_dump(),
            id=dataset.id,
            sha256=dataset.id,
            name=dataset.name,
            size_bytes=dataset.size_bytes,
            created_at=datetime.fromtimestamp(dataset.created_at, UTC),
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int = Field(description="all of the caller's datasets (an admin's: everyone's)")
