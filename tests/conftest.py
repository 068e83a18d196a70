"""Shared fixtures: an in-process client for the app (no network, no server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.jobs import ray_runtime
from app.main import app


@pytest.fixture(scope="session")
def client() -> TestClient:
    """The app without its lifespan (no job store, no Ray): the analysis endpoints need neither.
    Tests of training jobs enter their own ``with TestClient(app)`` to run the lifespan."""
    return TestClient(app)


@pytest.fixture(scope="session", autouse=True)
def stop_embedded_rays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The embedded Ray outlives the API by design; stop those this session's data dirs started."""
    yield
    for lock in tmp_path_factory.getbasetemp().glob("**/ray/lock"):
        ray_runtime.stop_embedded(lock.parent.parent)
