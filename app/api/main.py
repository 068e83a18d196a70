"""All routers of the API."""

from fastapi import APIRouter

from app.api.routes import datasets, docs, export, health, jobs, layers, models, playground, trained

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(layers.router)
api_router.include_router(models.router)
api_router.include_router(jobs.router)
api_router.include_router(export.router)
api_router.include_router(trained.router)
api_router.include_router(datasets.router)
api_router.include_router(docs.router)
api_router.include_router(playground.router)
