"""Export a model spec as a Python file or an ONNX file (untrained; a job's export carries weights)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from app.exports import FILES_CONTENT, Download, download
from app.schemas.export import ExportRequest

router = APIRouter(prefix="/models", tags=["models"])

FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file: text/x-python (pytorch) or application/octet-stream (onnx)",
        "content": FILES_CONTENT,
    },
    400: {"description": "the body is not text (FastAPI cannot decode it)"},
    413: {"description": "request body too large"},
    422: {"description": "invalid spec, a shape mismatch, a limit, or a layer ONNX cannot export (named)"},
    503: {"description": "the trace worker died under this request (it was replaced): retry"},
}
EXAMPLE = {
    "digits CNN as code": {
        "value": {
            "model": {
                "layers": [
                    {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
                    {"type": "ReLU"},
                    {"type": "MaxPool2d", "kernel_size": 2},
                    {"type": "Flatten"},
                    {"type": "Linear", "out_features": 10},
                ]
            },
            "input_shape": [64, 1, 8, 8],
            "format": "pytorch",
        }
    }
}


ABOUT = "A model built with Model Builder (untrained: build_model() initialises it)."


@router.post("/export", response_class=Response, responses=FILES)
async def export_model(
    request: Annotated[ExportRequest, Body(openapi_examples=EXAMPLE)], http: Request
) -> Response:
    """The model as one Python file importing only torch, or as an ONNX file (freshly initialised)."""
    what = Download(
        request.model,
        None if request.input_shape is None else tuple(request.input_shape),
        request.input_dtype,
        ABOUT,
        "model",
    )
    return await download(http, request.format, what)
