"""Maps the service's exceptions to HTTP, in FastAPI's validation-error format, in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from layers.errors import SpecError


def spec_error_response(exc: SpecError, prefix: tuple[str, ...] = ("body", "model")) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [exc.to_detail(prefix)]})


async def _spec_error_handler(request: Request, exc: SpecError) -> JSONResponse:
    return spec_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SpecError, _spec_error_handler)
