"""All routers of the API."""

from fastapi import APIRouter

from app.api.routes import health, layers, models

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(layers.router)
api_router.include_router(models.router)
