"""The API lock: keys on the /v1 routers, per-client token buckets answering 429 with Retry-After,
and jobs that belong to the key that created them.

The lock is the real app's (a router dependency); each test installs its own ``APILock`` with a
hand-moved clock, so refill is asserted exactly and without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.security import APILock, TokenBuckets, key_owner
from app.jobs.domain import JobStatus
from app.jobs.engine import JobEngine
from app.jobs.store import JobStore
from app.main import app

KEY = "s3cret-key"
LAYERS = "/v1/layers"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lock() -> Iterator[Callable]:
    """Installs an ``APILock`` on the app for one test; gives a client."""
    saved = app.state.api_lock

    def install(**kwargs: object) -> TestClient:
        app.state.api_lock = APILock(**kwargs)
        return TestClient(app)

    try:
        yield install
    finally:
        app.state.api_lock = saved


def test_off_by_default() -> None:
    settings = Settings(_env_file=None)
    assert settings.api_keys == [] and settings.admin_api_keys == [] and settings.rate_limit_per_s == 0
    assert not app.state.api_lock.keys_required and app.state.api_lock.buckets is None


def test_keys_and_rate_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_API_KEYS", '["a", "b"]')
    monkeypatch.setenv("MB_ADMIN_API_KEYS", '["root"]')
    monkeypatch.setenv("MB_RATE_LIMIT_PER_S", "2.5")
    monkeypatch.setenv("MB_RATE_LIMIT_BURST", "7")
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b"]
    assert [k.get_secret_value() for k in settings.admin_api_keys] == ["root"]
    assert "'a'" not in repr(settings) and "root" not in repr(settings)  # never in logs of the settings
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (2.5, 7)


def test_key_required_on_v1_only(lock) -> None:
    client = lock(api_keys=[KEY])
    assert client.get(LAYERS, headers={"X-API-Key": KEY}).status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}):
        response = client.get(LAYERS, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("ApiKey")
        [detail] = response.json()["detail"]
        assert detail["loc"] == ["header", "x-api-key"] and "x-api-key" in detail["msg"]
    response = client.post("/v1/models/summary", json={})
    assert response.status_code == 401  # before the body is validated
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/openapi.json", "/docs"):  # open (readiness itself may depend on Ray)
        assert client.get(path).status_code not in (401, 429), path


def test_every_v1_operation_declares_the_key_in_openapi() -> None:
    """So Swagger UI's Authorize button sends it with "Try it out"."""
    schema = app.openapi()
    scheme = schema["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            guarded = path.startswith("/v1")
            assert (operation.get("security") == [{"APIKeyHeader": []}]) == guarded, (method, path)


def test_any_of_several_keys_and_admin_keys(lock) -> None:
    client = lock(api_keys=["one", "two"], admin_keys=["root"])
    for key, status in (("two", 200), ("root", 200), ("three", 401)):
        assert client.get(LAYERS, headers={"X-API-Key": key}).status_code == status, key


def test_rate_limit_answers_429_with_retry_after(lock) -> None:
    clock = Clock()
    client = lock(rate_per_s=0.5, burst=2, clock=clock)
    assert [client.get(LAYERS).status_code for _ in range(2)] == [200, 200]
    response = client.get(LAYERS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # one token every 2 s
    assert response.json()["detail"][0]["type"] == "rate_limited"
    assert client.get("/healthz").status_code == 200  # probes are never limited
    clock.now += 2.0
    assert client.get(LAYERS).status_code == 200
    assert client.get(LAYERS).status_code == 429


def test_each_key_has_its_own_bucket(lock) -> None:
    clock = Clock()
    client = lock(api_keys=["a", "b"], rate_per_s=1, burst=1, clock=clock)
    assert client.get(LAYERS, headers={"X-API-Key": "a"}).status_code == 200
    assert client.get(LAYERS, headers={"X-API-Key": "a"}).status_code == 429
    assert client.get(LAYERS, headers={"X-API-Key": "b"}).status_code == 200
    # Key guessing is limited by address, and the 429 comes before the 401.
    assert client.get(LAYERS, headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get(LAYERS, headers={"X-API-Key": "nope"}).status_code == 429


def test_token_bucket_refill_and_cap() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=3, clock=clock)
    assert [buckets.take("c") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("c") == pytest.approx(0.1)
    clock.now += 0.05
    assert buckets.take("c") == pytest.approx(0.05)  # a refused request spends nothing
    clock.now += 100  # refill is capped at the burst
    assert [buckets.take("c") for _ in range(4)][-1] > 0


def test_token_buckets_forget_the_oldest_clients() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_clients=2, clock=Clock())
    for client in ("a", "b", "c"):
        buckets.take(client)
    assert len(buckets._buckets) == 2 and "a" not in buckets._buckets
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


def test_cors_allows_no_other_origin_by_default() -> None:
    """A web page the developer opens elsewhere cannot queue jobs on their local API."""
    assert Settings(_env_file=None).cors_origins == []
    client = TestClient(app)
    origin = {"Origin": "http://evil.example"}
    assert "access-control-allow-origin" not in client.get(LAYERS, headers=origin).headers
    preflight = client.options("/v1/jobs", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


# Jobs belong to the key that created them. A real engine and store, no Ray: the jobs are stored
# as the engine's submit stores them, and cancelling a job that has no task touches no Ray.


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    saved = getattr(app.state, "jobs", None)
    engine = JobEngine(JobStore(tmp_path))
    app.state.jobs = engine
    try:
        yield engine.store
    finally:
        app.state.jobs = saved
        engine.store.close()


def test_jobs_belong_to_their_key(lock, jobs: JobStore) -> None:
    client = lock(api_keys=["alice", "bob"], admin_keys=["root"])
    jobs.create("a1", {"n": 1}, 1, owner=key_owner("alice"))
    jobs.create("b1", {"n": 2}, 1, owner=key_owner("bob"))
    assert jobs.get("a1").owner == key_owner("alice") and "alice" not in str(jobs.get("a1"))

    def as_(key: str) -> dict[str, str]:
        return {"X-API-Key": key}

    listed = client.get("/v1/jobs", headers=as_("alice")).json()
    assert [j["id"] for j in listed["data"]] == ["a1"] and listed["count"] == 1
    assert client.get("/v1/jobs/a1", headers=as_("alice")).json()["request"] == {"n": 1}
    jobs.finish("b1", JobStatus.SUCCEEDED)  # deletable, so a 404 below is ownership, not a 409
    for method, path in (
        ("GET", "/v1/jobs/b1"),
        ("GET", "/v1/jobs/b1/events"),
        ("POST", "/v1/jobs/b1/cancel"),
        ("DELETE", "/v1/jobs/b1"),
        ("GET", "/v1/jobs/b1/weights"),
        ("POST", "/v1/jobs/b1/predict"),
    ):
        response = client.request(method, path, headers=as_("alice"), json={"inputs": [[1.0]]})
        assert response.status_code == 404, (method, path, response.text)  # as if it did not exist
    assert jobs.get("b1") is not None  # alice's delete did not touch it
    admin = client.get("/v1/jobs", headers=as_("root")).json()
    assert sorted(j["id"] for j in admin["data"]) == ["a1", "b1"] and admin["count"] == 2
    assert client.get("/v1/jobs/b1", headers=as_("root")).json()["status"] == "succeeded"
    assert client.delete("/v1/jobs/b1", headers=as_("root")).status_code == 204
    assert client.get("/v1/jobs/b1", headers=as_("bob")).status_code == 404


def test_another_keys_job_is_refused_before_its_request_is_read(lock, jobs: JobStore) -> None:
    """Issue 21, item 16: the owner is checked before anything of the job is loaded. Bob's stored
    request is made unreadable (not JSON): Alice's requests for his job are 404s, not a failed read
    (before: the read decoded the request first, and failed; a readable one took 50 ms when large)."""
    client = lock(api_keys=["alice", "bob"])
    jobs.create("b1", {"n": 2}, 1, owner=key_owner("bob"))
    jobs.finish("b1", JobStatus.SUCCEEDED)
    jobs._write(lambda conn: conn.exec_driver_sql("UPDATE jobs SET request = '{not JSON'"))
    for method, path in (("GET", "/v1/jobs/b1"), ("DELETE", "/v1/jobs/b1"), ("GET", "/v1/jobs/b1/weights")):
        response = client.request(method, path, headers={"X-API-Key": "alice"})
        assert response.status_code == 404, (method, path, response.text)


def test_without_keys_every_job_is_everyones(lock, jobs: JobStore) -> None:
    client = lock()
    jobs.create("j1", {}, 1)
    assert [j["id"] for j in client.get("/v1/jobs").json()["data"]] == ["j1"]
    assert client.get("/v1/jobs/j1").status_code == 200
