"""The API lock on a real uvicorn server started as ``make run`` starts it, behind a root path.

uvicorn puts ``--root-path`` in front of the request path (Starlette still routes it), and by
default believes ``X-Forwarded-For`` from loopback: neither may open a way around the key or the
per-client rate limit.
"""

from __future__ import annotations

import httpx
from servers import clean_env, running_server

KEY = "k1"


def test_root_path_and_forwarded_for_do_not_get_around_the_lock(tmp_path) -> None:
    env = clean_env(
        MB_API_KEYS=f'["{KEY}"]',
        MB_RATE_LIMIT_PER_S="0.001",
        MB_RATE_LIMIT_BURST="2",
        MB_RAY_EAGER_START="false",
        MB_DATA_DIR=str(tmp_path),
    )
    with running_server(env, args=("--root-path", "/api")) as (url, _):
        job = {"model": {"layers": []}}
        response = httpx.post(f"{url}/v1/jobs", json=job, headers={"X-Forwarded-For": "10.0.0.1"})
        assert response.status_code == 401, response.text
        assert httpx.get(f"{url}/api/v1/layers").status_code == 404  # not routed, so nothing to guard
        response = httpx.get(f"{url}/v1/jobs", headers={"X-Forwarded-For": "10.0.0.2"})
        assert response.status_code == 401, response.text
        # A new X-Forwarded-For is not a new client: the peer has spent its burst of 2.
        response = httpx.get(f"{url}/v1/layers", headers={"X-Forwarded-For": "10.0.0.3"})
        assert response.status_code == 429, response.text
        assert httpx.get(f"{url}/v1/layers", headers={"X-API-Key": KEY}).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200
