"""The summary cache is bounded by bytes (MB_SUMMARY_CACHE_BYTES), not only by entries: 256
summaries of 4,096 layers each were about 4 GiB."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.routes import models
from app.core.cache import BytesLRU
from app.core.config import Settings


def test_bytes_lru_evicts_the_least_recently_used_past_its_bytes() -> None:
    cache = BytesLRU(max_bytes=30, max_entries=10)
    cache.put("a", b"x" * 9)  # 10 bytes with its key
    cache.put("b", b"x" * 9)
    assert cache.get("a") == b"x" * 9  # a is now the most recent
    cache.put("c", b"x" * 14)  # 15: b goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.size == 25
    cache.put("d", b"x" * 40)  # alone over the bound: not kept, nothing evicted for it
    assert cache.get("d") is None and len(cache) == 2
    cache.put("a", b"")  # replacing an entry counts its new size only
    assert cache.size == 16
    counted = BytesLRU(max_bytes=1000, max_entries=2)
    for key in "xyz":
        counted.put(key, b"1")
    assert len(counted) == 2 and counted.get("x") is None


def test_the_summary_route_keeps_its_cache_under_the_byte_bound(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(_env_file=None).summary_cache_bytes == 64 << 20
    bodies = [
        {"model": {"layers": [{"type": "Linear", "out_features": 4}] * n}, "input_shape": [2, 4]}
        for n in (1, 8, 16)
    ]
    unbounded = BytesLRU(1 << 30, 256)
    monkeypatch.setattr(models, "_cache", unbounded)
    for body in bodies:
        assert client.post("/v1/models/summary", json=body).status_code == 200
    costs = [len(key) + len(value) for key, value in unbounded._items.items()]
    bound = max(costs)  # the largest fits with its key, the three together do not
    assert len(costs) == len(bodies) and bound < sum(costs)
    monkeypatch.setattr(models, "_cache", BytesLRU(bound, 256))
    for body in bodies:
        response = client.post("/v1/models/summary", json=body)
        assert response.status_code == 200
        assert models._cache.size <= bound
    assert len(models._cache) < len(bodies)  # so the oldest had to go
    again = client.post("/v1/models/summary", json=bodies[-1])  # the latest is kept: served as cached
    assert again.content == models._cache.get(next(reversed(models._cache._items)))
