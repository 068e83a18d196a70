"""Refusals whose message says what is wrong (these once read "unflatten got an unexpected
error:." and "branch 0 gives [1, 3], branch 0 gives [1, 3]")."""

from __future__ import annotations

from fastapi.testclient import TestClient


def refusal(client: TestClient, layer: dict, input_shape: list[int]) -> dict:
    response = client.post(
        "/v1/models/summary", json={"model": {"layers": [layer]}, "input_shape": input_shape}
    )
    assert response.status_code == 422, response.text[:300]
    [error] = response.json()["detail"]
    return error


def test_unflatten_with_two_inferred_sizes(client: TestClient) -> None:
    error = refusal(client, {"type": "Unflatten", "dim": 1, "unflattened_size": [-1, -1]}, [2, 12])
    assert error["loc"][-1] == "unflattened_size"
    assert "at most one size may be -1" in error["msg"] and "unexpected error" not in error["msg"]


def test_concat_along_a_dimension_the_branches_do_not_have(client: TestClient) -> None:
    branch = [{"type": "Linear", "out_features": 3}]
    error = refusal(client, {"type": "Concat", "dim": 8, "branches": [branch, branch]}, [1, 4])
    assert error["loc"] == ["body", "model", "layers", 0, "dim"]
    assert "dim 8 is out of range for the branch outputs of shape [1, 3] (expected -2 to 1)" in error["msg"]
