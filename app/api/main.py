"""All routers of the API: the versioned ones under ``/v1``, behind the API lock, applied once here."""

from fastapi import APIRouter, Depends

from app.api.deps import GUARD_RESPONSES, guard
from app.api.routes import datasets, docs, export, health, jobs, layers, models, playground, trained

v1_router = APIRouter(prefix="/v1", dependencies=[Depends(guard)], responses=GUARD_RESPONSES)
v1_router.include_router(layers.router)
v1_router.include_router(models.router)
v1_router.include_router(jobs.router)
v1_router.include_router(export.router)
v1_router.include_router(trained.router)
v1_router.include_router(datasets.router)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(v1_router)
api_router.include_router(docs.router)
api_router.include_router(playground.router)
