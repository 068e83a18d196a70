"""JSON booleans never pass for numbers (pydantic's lax mode would read `true` as 1)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.schemas.jobs import JobCreate

CASES = {
    "layer size": ({"layers": [{"type": "Linear", "out_features": True}]}, [2, 3], "out_features"),
    "dimension": (
        {"layers": [{"type": "Concat", "branches": [[{"type": "ReLU"}]], "dim": False}]},
        [2, 3],
        "dim",
    ),
    "list of sizes": (
        {"layers": [{"type": "Unflatten", "dim": 1, "unflattened_size": [True, 3]}]},
        [2, 3],
        "unflattened_size",
    ),
    "input shape": ({"layers": [{"type": "ReLU"}]}, [True, 3], "input_shape"),
}


@pytest.mark.parametrize("case", CASES)
def test_boolean_for_a_number_is_a_422_naming_the_field(client, case):
    model, shape, field = CASES[case]
    response = client.post("/v1/models/summary", json={"model": model, "input_shape": shape})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert f"{field}: expected a number, got a boolean" in detail["msg"]


def test_booleans_still_fill_boolean_fields_and_whole_floats_fill_ints(client):
    body = {
        "model": {"layers": [{"type": "Linear", "out_features": 3.0, "bias": False}]},
        "input_shape": [2, 4],
    }
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 200
    assert response.json()["model"]["layers"][0] == {
        "type": "Linear",
        "in_features": 4,
        "out_features": 3,
        "bias": False,
        "name": None,
        "tie_weight": None,
    }


def test_training_fields_refuse_booleans_too():
    body = {
        "model": {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]},
        "dataset": {"name": "digits"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "Adam", "lr": 0.001},
        "epochs": True,
    }
    with pytest.raises(ValidationError, match="epochs: expected a number, got a boolean"):
        JobCreate.model_validate(body)
