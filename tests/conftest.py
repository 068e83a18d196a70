"""Shared fixtures: an in-process client for the app (no network, no server)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import app


@pytest.fixture(scope="session")
def client() -> TestClient:
    """The app without its lifespan (no job store, no Ray): the analysis endpoints need neither.
    Tests of training jobs enter their own ``with TestClient(app)`` to run the lifespan."""
    return TestClient(app)
