"""Maps the service's exceptions to HTTP, in FastAPI's validation-error format, in one place."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Send

from app.core.trace_pool import WorkerCrashed
from app.jobs.store import StoreUnavailable
from layers.language.errors import SpecError

STORE_RETRY_AFTER_S = 5

log = logging.getLogger(__name__)


class ErrorJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error echoes the client's strings, and a
    lone surrogate (``"\\ud800"``, valid in JSON, not in UTF-8) cannot be encoded otherwise."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


async def _spec_error_handler(request: Request, exc: SpecError) -> JSONResponse:
    # Routes raise SpecErrors located relative to the request body.
    return ErrorJSONResponse(status_code=422, content={"detail": [_json_safe(exc.to_detail(("body",)))]})


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as strings: Python's JSON parser accepts them in a request,
    but they cannot be written back, and the default handler echoes each bad input (a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _request_validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return ErrorJSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


def allowed_methods(request: Request) -> list[str]:
    """Every documented method at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 405:
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
    if exc.status_code in (204, 304):
        return await http_exception_handler(request, exc)
    return ErrorJSONResponse(
        {"detail": _json_safe(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug of ours: a 500 whose id finds the logged traceback, never the user's fault."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    msg = f"internal error {error_id}: a bug in the service, not in the request; it was logged"
    detail = [{"type": "internal_error", "loc": [], "msg": msg, "ctx": {"error_id": error_id}}]
    # Starlette raises the error on to the server once this is sent, and uvicorn then closes the
    # connection: say so, or a client reusing the connection sends its next request into it.
    return ErrorJSONResponse(status_code=500, content={"detail": detail}, headers={"Connection": "close"})


async def send_error(
    send: Send,
    status: int,
    kind: str,
    loc: list[str],
    msg: str,
    ctx: dict[str, Any] | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer from a raw ASGI middleware (before FastAPI runs), in FastAPI's error format."""
    detail: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg}
    if ctx is not None:
        detail["ctx"] = ctx
    body = json.dumps({"detail": [detail]}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start, *headers]})
    await send({"type": "http.response.body", "body": body})


async def _store_unavailable_handler(request: Request, exc: StoreUnavailable) -> JSONResponse:
    # The database is down, locked past the store's retries, or unreadable: the client may retry.
    detail = {"type": "store_unavailable", "loc": ["store"], "msg": str(exc)}
    detail["ctx"] = {"database": exc.database}
    headers = {"Retry-After": str(STORE_RETRY_AFTER_S)}
    return JSONResponse(status_code=503, content={"detail": [detail]}, headers=headers)


async def _worker_crashed_handler(request: Request, exc: WorkerCrashed) -> JSONResponse:
    # A trace worker died under this request (a segfault, the OOM killer); it has been replaced.
    detail = {"type": "trace_worker_crashed", "loc": ["model"], "msg": str(exc)}
    return JSONResponse(status_code=503, content={"detail": [detail]}, headers={"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StoreUnavailable, _store_unavailable_handler)
    app.add_exception_handler(WorkerCrashed, _worker_crashed_handler)
    app.add_exception_handler(SpecError, _spec_error_handler)
    app.add_exception_handler(RequestValidationError, _request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _internal_error_handler)
