"""A 405 lists every method served at the path, not only the first route's."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/jobs", "GET, POST"),
        ("PATCH", "/v1/jobs/0123", "DELETE, GET"),
        ("DELETE", "/v1/models/summary", "POST"),
    ],
)
def test_405_allow_header_names_every_route_on_the_path(client, method, path, allowed):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": "Method Not Allowed"}
