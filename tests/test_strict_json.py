"""JSON booleans never pass for numbers (pydantic's lax mode would read `true` as 1), and only
JSON booleans fill boolean fields (lax mode would read `0`, `1.0` or `"yes"` as one)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from app.schemas.jobs import JobCreate
from layers import LAYER_SPECS
from layers.language.spec import SpecModel, accepts
from layers.training.optimizers import OPTIMIZER_SPECS

LAYER = ["body", "model", "layers", 0]

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
    assert detail["loc"][-1] == field, detail  # at the field, not at the model holding it


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
    with pytest.raises(ValidationError, match="epochs: expected a number, got a boolean") as raised:
        JobCreate.model_validate(body)
    assert [e["loc"] for e in raised.value.errors()] == [("epochs",)]


# -- booleans are JSON booleans: no 0, 1, "true" or 1.0 for a boolean field ---------------------


def _spec_classes() -> list[type[SpecModel]]:
    """Every class of the spec language (layers, losses, optimizers, datasets, request bodies)."""
    found, todo = [], [SpecModel]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


BOOLEAN_FIELDS = sorted(
    {
        (cls.__name__, name): cls
        for cls in _spec_classes()
        for name, field in cls.model_fields.items()
        if accepts(field.annotation, bool)
    }.items()
)


def test_the_boolean_fields_are_found_in_every_part_of_the_language() -> None:
    classes = {cls for _, cls in BOOLEAN_FIELDS}
    assert {LAYER_SPECS["Mean"], LAYER_SPECS["Upsample"], OPTIMIZER_SPECS["SGD"]} <= classes
    assert len(BOOLEAN_FIELDS) >= 30, BOOLEAN_FIELDS


@pytest.mark.parametrize("value", [0, 1, 1.0, "true", "false", "yes"])
@pytest.mark.parametrize(("where", "cls"), BOOLEAN_FIELDS, ids=[f"{c}.{f}" for (c, f), _ in BOOLEAN_FIELDS])
def test_only_a_json_boolean_fills_a_boolean_field(where: tuple[str, str], cls: type, value: object) -> None:
    field = where[1]
    with pytest.raises(ValidationError) as raised:
        cls.model_validate_json(json.dumps({field: value}))
    # A union field (`qkv_bias`: a bool or a list of them) reports each branch under its own loc.
    errors = [e for e in raised.value.errors() if e["loc"][:1] == (field,)]
    assert "bool_type" in [e["type"] for e in errors], raised.value.errors()


def test_a_number_for_a_boolean_is_a_422_at_the_field(client) -> None:
    body = {"model": {"layers": [{"type": "Mean", "dim": 1, "keepdim": 0}]}, "input_shape": [2, 3]}
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "model", "layers", 0, "Mean", "keepdim"]
    assert detail["type"] == "bool_type" and detail["input"] == 0
    body = {
        "model": {"layers": [{"type": "Linear", "out_features": 2}]},
        "input_shape": [2, 3],
        "training": {"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": "true"}},
    }
    (detail,) = client.post("/v1/models/summary", json=body).json()["detail"]
    assert detail["loc"] == ["body", "training", "optimizer", "SGD", "nesterov"]


def test_booleans_still_fill_boolean_fields_and_the_schema_says_boolean(client) -> None:
    body = {"model": {"layers": [{"type": "Mean", "dim": 1, "keepdim": True}]}, "input_shape": [2, 3]}
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 200 and response.json()["output_shape"] == [2, 1]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for (name, field), _ in BOOLEAN_FIELDS:
        if name not in schemas or field not in schemas[name].get("properties", {}):
            continue  # an abstract base: its fields are in each concrete class
        prop = schemas[name]["properties"][field]
        assert {"type": "boolean"} in prop.get("anyOf", [prop]) or prop.get("type") == "boolean", (name, prop)


# -- numbers are JSON numbers: no "3" for an integer field or "0.5" for a float one -------------

STRING_NUMBERS = {
    "integer": (
        {"layers": [{"type": "Linear", "out_features": "3"}]},
        [2, 3],
        {},
        [*LAYER, "Linear", "out_features"],
    ),
    "float": ({"layers": [{"type": "Dropout", "p": "0.5"}]}, [2, 3], {}, [*LAYER, "Dropout", "p"]),
    "int or list": ({"layers": [{"type": "Mean", "dim": "1"}]}, [2, 3], {}, [*LAYER, "Mean", "dim"]),
    "float in a list": (
        {"layers": [{"type": "Upsample", "scale_factor": ["2.0"], "mode": "linear"}]},
        [2, 3, 4],
        {},
        [*LAYER, "Upsample", "scale_factor"],
    ),
    "input shape": ({"layers": [{"type": "ReLU"}]}, ["2", 3], {}, ["body", "input_shape", 0]),
    "optimizer": (
        {"layers": [{"type": "Linear", "out_features": 2}]},
        [2, 3],
        {"training": {"optimizer": {"type": "SGD", "lr": "0.1"}}},
        ["body", "training", "optimizer", "SGD", "lr"],
    ),
}


@pytest.mark.parametrize("case", STRING_NUMBERS)
def test_a_string_for_a_number_is_a_422_at_the_field(client, case: str) -> None:
    model, shape, extra, loc = STRING_NUMBERS[case]
    response = client.post("/v1/models/summary", json={"model": model, "input_shape": shape, **extra})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert all(e["loc"][: len(loc)] == loc for e in errors), errors
    assert any(e["type"] in ("int_type", "float_type") for e in errors), errors


def test_a_string_for_a_job_number_is_refused() -> None:
    body = {
        "model": {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]},
        "dataset": {"name": "digits", "val_fraction": "0.2"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "Adam"},
        "epochs": "5",
    }
    with pytest.raises(ValidationError) as raised:
        JobCreate.model_validate_json(json.dumps(body))
    assert {e["loc"] for e in raised.value.errors()} == {("dataset", "digits", "val_fraction"), ("epochs",)}
