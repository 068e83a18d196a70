"""Liveness, readiness, and CORS for browser frontends."""

from __future__ import annotations

import pytest
import torch
from fastapi.middleware.cors import CORSMiddleware
from fastapi.testclient import TestClient

from app.core.config import settings
from app.main import CORS_OPTIONS, app

FRONTEND = "http://localhost:3000"


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_compute_device(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    assert body["device"] == expected


@pytest.fixture(scope="module")
def frontend() -> TestClient:
    """The app as it runs with ``MB_CORS_ORIGINS='["http://localhost:3000"]'`` (the default allows none)."""
    return TestClient(CORSMiddleware(app, allow_origins=[FRONTEND], **CORS_OPTIONS))


def allowed_origin() -> str:
    return FRONTEND


def test_cors_header_on_a_simple_request(frontend) -> None:
    origin = allowed_origin()
    response = frontend.get("/v1/layers", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", origin)


def test_cors_preflight_for_the_summary(frontend) -> None:
    origin = allowed_origin()
    response = frontend.options(
        "/v1/models/summary",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_header_on_an_error_answer(frontend) -> None:
    """A browser can read a 422 too (its message names the layer)."""
    origin = allowed_origin()
    response = frontend.post("/v1/models/summary", json={"model": {"layers": []}}, headers={"Origin": origin})
    assert response.status_code == 422
    assert response.headers["access-control-allow-origin"] in ("*", origin)


def test_cors_header_on_a_413(frontend) -> None:
    origin = allowed_origin()
    body = b"[" + b"0," * settings.max_body_bytes + b"0]"
    response = frontend.post(
        "/v1/models/summary", content=body, headers={"Origin": origin, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] in ("*", origin)
