"""Model Builder: JSON layer specs in, everything PyTorch knows about the model out."""

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.api.main import api_router
from app.api.routes.docs import STATIC_DIR
from app.core import trace_pool
from app.core.config import settings
from app.core.errors import install_error_handlers
from app.core.limits import BodyLimitMiddleware
from app.core.security import APILock
from app.core.unread_body import CloseUnreadBodyMiddleware
from app.core.warmup import warming_up
from app.jobs.engine import jobs_lifespan


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = trace_pool.start()  # the warm trace workers (none with MB_TRACE_PROCESSES=0)
    try:  # the workers' forkserver warms up for them; the API itself only without them
        with warming_up() if pool is None else contextlib.nullcontext():
            async with jobs_lifespan(app):  # the job store, its reaper and retention, Ray
                yield
    finally:
        trace_pool.stop()


app = FastAPI(
    title="Model Builder",
    version="0.1.0",
    description="Turns JSON layer specs into PyTorch models and reports shapes, parameters, FLOPs "
    "and memory before you spend a GPU-hour.",
    docs_url=None,  # served offline by app.api.routes.docs
    redoc_url=None,
    lifespan=lifespan,
)
app.add_middleware(
    BodyLimitMiddleware,
    max_body_bytes=settings.max_body_bytes,
    max_json_depth=settings.max_json_depth,
    streamed=frozenset({"/v1/datasets"}),  # uploads: streamed to disk, MB_MAX_DATASET_BYTES
)
# No cross-origin access unless MB_CORS_ORIGINS names a frontend's origin (the playground is same-origin).
CORS_OPTIONS = {"allow_methods": ["*"], "allow_headers": ["*"]}
app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, **CORS_OPTIONS)
app.add_middleware(CloseUnreadBodyMiddleware)  # outermost: it sees what every layer inside read
# Applied by the /v1 routers' dependency (app.api.deps.guard), so it follows routing.
app.state.api_lock = APILock(
    api_keys=[key.get_secret_value() for key in settings.api_keys],
    admin_keys=[key.get_secret_value() for key in settings.admin_api_keys],
    rate_per_s=settings.rate_limit_per_s,
    burst=settings.rate_limit_burst,
)
install_error_handlers(app)
app.include_router(api_router)
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
