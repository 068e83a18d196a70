"""Swagger UI and ReDoc served from the package's own assets, so they work without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

# Mounted at /static by app.main; vendor/ holds the npm files listed in vendor/VENDORED.md.
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

# Confines the pages to this origin: offline they never wait on the network, and ReDoc's
# hard-coded CDN logo is refused by the browser instead of fetched. The Swagger UI and ReDoc
# pages need inline scripts and styles (their initialiser, styled-components).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

router = APIRouter(include_in_schema=False)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _root(request: Request) -> str:
    # Behind a proxy that strips a prefix, every URL the page loads must carry it.
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI, its JavaScript and CSS served by this API."""
    app, root = request.app, _root(request)
    page = get_swagger_ui_html(
        openapi_url=root + app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}/static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/vendor/swagger-ui/favicon-32x32.png",
        oauth2_redirect_url=root + "/docs/oauth2-redirect",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    return _confined(page)


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 callback page (inline script, nothing fetched)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc, without Google Fonts or any other outside request."""
    app, root = request.app, _root(request)
    page = get_redoc_html(
        openapi_url=root + app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}/static/vendor/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/vendor/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
    return _confined(page)
