"""The playground: one static page at ``/`` that builds, inspects and trains models via this API."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.routes.docs import STATIC_DIR

# The playground has no inline script, so it gets the stricter policy; uPlot sets inline styles.
PLAYGROUND_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    """The page itself; its script and styles are under /static/playground/."""
    page = STATIC_DIR / "playground" / "index.html"
    return FileResponse(page, headers={"Content-Security-Policy": PLAYGROUND_CSP})
