"""The API lock: keys on /v1, per-client token buckets answering 429 with Retry-After.

The lock wraps the real app, so the guarded routes are the real ones; time is a hand-moved
clock, so refill is asserted exactly and without sleeping.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.security import APILockMiddleware, TokenBuckets
from app.main import app

KEY = "s3cret-key"
LAYERS = "/v1/layers"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def locked(**kwargs) -> TestClient:
    return TestClient(APILockMiddleware(app, **kwargs))


def test_off_by_default() -> None:
    settings = Settings(_env_file=None)
    assert settings.api_keys == [] and settings.rate_limit_per_s == 0
    lock = next(m for m in app.user_middleware if m.cls is APILockMiddleware)
    assert lock.kwargs["api_keys"] == [] and lock.kwargs["rate_per_s"] == 0


def test_keys_and_rate_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_API_KEYS", '["a", "b"]')
    monkeypatch.setenv("MB_RATE_LIMIT_PER_S", "2.5")
    monkeypatch.setenv("MB_RATE_LIMIT_BURST", "7")
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b"]
    assert "'a'" not in repr(settings)  # keys never show up in logs of the settings
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (2.5, 7)


def test_key_required_on_v1_only() -> None:
    client = locked(api_keys=[KEY])
    assert client.get(LAYERS, headers={"X-API-Key": KEY}).status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}):
        response = client.get(LAYERS, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("ApiKey")
        [detail] = response.json()["detail"]
        assert detail["loc"] == ["header", "x-api-key"] and "x-api-key" in detail["msg"]
    response = client.post("/v1/models/summary", json={})
    assert response.status_code == 401  # before the body is even validated
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/openapi.json"):  # open (readiness itself may depend on Ray)
        assert client.get(path).status_code not in (401, 429), path


def test_any_of_several_keys() -> None:
    client = locked(api_keys=["one", "two"])
    assert client.get(LAYERS, headers={"X-API-Key": "two"}).status_code == 200
    assert client.get(LAYERS, headers={"X-API-Key": "three"}).status_code == 401


def test_rate_limit_answers_429_with_retry_after() -> None:
    clock = Clock()
    client = locked(rate_per_s=0.5, burst=2, clock=clock)
    assert [client.get(LAYERS).status_code for _ in range(2)] == [200, 200]
    response = client.get(LAYERS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # one token every 2 s
    assert response.json()["detail"][0]["type"] == "rate_limited"
    assert client.get("/healthz").status_code == 200  # probes are never limited
    clock.now += 2.0
    assert client.get(LAYERS).status_code == 200
    assert client.get(LAYERS).status_code == 429


def test_each_key_has_its_own_bucket() -> None:
    clock = Clock()
    client = locked(api_keys=["a", "b"], rate_per_s=1, burst=1, clock=clock)
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
