"""The OpenAPI document and the layer catalog both come from the registry, and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import ValidationError

from app.api.deps import get_engine
from app.api.routes import datasets, export, jobs, layers, models, trained
from layers import LAYER_SPECS
from layers.language.base import SpatialSpec
from layers.language.graph_specs import GRAPH_SPECS

# The endpoints of the core (issue 2); each must be usable from Swagger UI's "Try it out" unchanged.
CORE_OPERATIONS = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/layers"),
    ("get", "/v1/layers/{layer_type}"),
    ("post", "/v1/models/summary"),
]


def resolve(schema: dict) -> dict:
    """The schema itself, or its top-level ``$ref`` (recursive container schemas) resolved."""
    if "$ref" in schema:
        return schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def layer_unions(node: object) -> list[dict]:
    """Every union of the document discriminated by ``type`` that offers a layer (other unions,
    e.g. of optimizers, use ``type`` too)."""
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            discriminator = item.get("discriminator", {})
            if discriminator.get("propertyName") == "type" and "Linear" in discriminator.get("mapping", {}):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_discriminator_mapping_equals_the_registry(openapi: dict) -> None:
    schemas = openapi["components"]["schemas"]
    # the union is written once; the model's list and every container's child lists refer to it
    # through the named lists (inlined, it made Swagger UI and ReDoc unfold every container chain)
    unions = layer_unions(openapi)
    assert unions == [schemas["AnyLayer"]]
    for name in ("Layers", "Branch"):
        assert schemas[name]["items"] == {"$ref": "#/components/schemas/AnyLayer"}
    assert schemas["ModelSpec"]["properties"]["layers"]["$ref"] == "#/components/schemas/Layers"
    for union in unions:
        mapping = union["discriminator"]["mapping"]
        assert set(mapping) == set(LAYER_SPECS)
        refs = {option["$ref"] for option in union["oneOf"]}
        assert refs == set(mapping.values())
        for name, ref in mapping.items():
            schema = schemas[ref.rsplit("/", 1)[-1]]
            assert schema["properties"]["type"]["const"] == name  # each tag points at its own spec
            assert schema.get("additionalProperties") is False  # misspelt fields are errors


def test_core_operations_have_working_examples(client, openapi: dict) -> None:
    """Every parameter and request body of the core endpoints carries an example, and sending the
    examples as they stand (Swagger UI's "Try it out") succeeds."""
    for method, path in CORE_OPERATIONS:
        operation = openapi["paths"][path][method]
        values = {}
        for parameter in operation.get("parameters", []):
            if parameter.get("required"):
                examples = parameter.get("examples") or parameter.get("schema", {}).get("examples")
                assert examples, f"{method.upper()} {path}: parameter {parameter['name']} has no example"
                first = (
                    next(iter(examples.values())) if isinstance(examples, dict) else {"value": examples[0]}
                )
                values[parameter["name"]] = first["value"]
        url = path.format(**values)
        if "requestBody" in operation:
            examples = operation["requestBody"]["content"]["application/json"].get("examples", {})
            assert examples, f"{method.upper()} {path}: request body has no example"
            for name, example in examples.items():
                response = client.request(method, url, json=example["value"])
                assert response.status_code == 200, (name, response.text)
        else:
            assert client.request(method, url).status_code == 200, url


def test_summary_examples_cover_seed_cnn_lstm_and_graphs(openapi: dict) -> None:
    examples = openapi["paths"]["/v1/models/summary"]["post"]["requestBody"]["content"]["application/json"]
    types = {
        layer["type"]
        for example in examples["examples"].values()
        for layer in example["value"]["model"].get("layers", example["value"]["model"].get("nodes"))
    }
    assert {"MyConv2d", "MyLinear", "Conv2d", "LSTM", "Add", "Repeat"} <= types


def test_summary_documents_its_errors(openapi: dict) -> None:
    responses = openapi["paths"]["/v1/models/summary"]["post"]["responses"]
    assert {"200", "413", "422"} <= set(responses)


def test_job_links_point_at_job_operations(openapi: dict) -> None:
    """The links of the job routes (followed by clients and schemathesis' stateful phase) name
    operations that exist and take the ``job_id`` they pass."""
    found = 0
    for operations in openapi["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                    target = openapi["paths"][path.replace("~1", "/").replace("~0", "~")][method]
                    assert {p["name"] for p in target["parameters"]} >= set(link["parameters"]) == {"job_id"}
                    found += 1
    assert found >= 10


def test_catalog_lists_every_registered_type(client) -> None:
    body = client.get("/v1/layers").json()
    assert body["count"] == len(body["data"]) == len(LAYER_SPECS) + len(GRAPH_SPECS)
    assert [entry["type"] for entry in body["data"]] == [*LAYER_SPECS, *GRAPH_SPECS]
    assert [entry["graph_only"] for entry in body["data"]] == [False] * len(LAYER_SPECS) + [True] * len(
        GRAPH_SPECS
    )
    for entry in body["data"][len(LAYER_SPECS) :]:  # the graph form's own: the node's schema
        assert entry["category"] in ("merge", "split")
        assert {"name", "inputs" if entry["category"] == "merge" else "input"} <= set(
            entry["schema"]["required"]
        )
    for entry in body["data"][: len(LAYER_SPECS)]:
        spec = LAYER_SPECS[entry["type"]]
        assert entry["category"] == spec.category and entry["category"] != "other", entry["type"]
        assert entry["description"] and "\n" not in entry["description"]
        assert entry["schema"] == spec.model_json_schema()
        assert resolve(entry["schema"])["properties"]["type"]["const"] == entry["type"]


@pytest.mark.parametrize("name", sorted(LAYER_SPECS))
def test_catalog_entry_for_each_type(client, name: str) -> None:
    response = client.get(f"/v1/layers/{name}")
    assert response.status_code == 200
    assert response.json()["type"] == name
    assert resolve(response.json()["schema"])["title"] == LAYER_SPECS[name].__name__


@pytest.mark.parametrize("name", ["Conv9d", "linear", "__class__", "..%2Fsecrets", "os.system"])
def test_unknown_catalog_entry_is_404(client, name: str) -> None:
    response = client.get(f"/v1/layers/{name}")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_catalog_schemas_render_forms(client) -> None:
    """A frontend form needs each field's type; inferred sizes are optional, required ones listed."""
    linear = client.get("/v1/layers/Linear").json()["schema"]
    assert linear["required"] == ["out_features"]
    assert "in_features" in linear["properties"] and "description" in linear["properties"]["in_features"]
    conv = client.get("/v1/layers/Conv2d").json()["schema"]
    assert set(conv["required"]) == {"out_channels", "kernel_size"}


SPATIAL = sorted(
    name for name, spec in LAYER_SPECS.items() if issubclass(spec, SpatialSpec) and spec.per_dim_fields
)


@pytest.mark.parametrize("name", SPATIAL)
def test_per_dimension_arguments_state_their_length(openapi: dict, name: str) -> None:
    """A list for kernel_size, stride, padding, ... has exactly one entry per spatial dimension:
    the schema says so (minItems = maxItems), and the validator enforces the same."""
    spec = LAYER_SPECS[name]
    properties = openapi["components"]["schemas"][spec.__name__]["properties"]
    checked = 0
    for field in spec.per_dim_fields:
        if field not in properties:
            continue
        arrays = [b for b in properties[field].get("anyOf", [properties[field]]) if b.get("type") == "array"]
        for branch in arrays:
            assert branch["minItems"] == branch["maxItems"] == spec.spatial_dims, (field, branch)
            checked += 1
        if arrays:
            with pytest.raises(ValidationError) as refused:
                spec.model_validate({**_minimal(spec), field: [1] * (spec.spatial_dims + 1)})
            assert refused.value.errors()[0]["loc"] == (field,)
    assert checked, f"{name}: no per-dimension list in its schema"


def _minimal(spec: type) -> dict:
    """The required fields of ``spec`` with a valid value each (sizes: 1)."""
    return {name: 1 for name, field in spec.model_fields.items() if field.is_required() and name != "type"}


def _calls(dependant: Dependant) -> set[Callable]:
    """Every dependency a route runs, however deep."""
    found, stack = set(), [dependant]
    while stack:
        item = stack.pop()
        found.add(item.call)
        stack.extend(item.dependencies)
    return found


V1_ROUTES = [  # (method, path in the document, route) of every /v1 operation (behind app.api.deps.guard)
    (method, f"/v1{route.path}", route)
    for module in (layers, models, jobs, export, trained, datasets)
    for route in module.router.routes
    if isinstance(route, APIRoute) and route.include_in_schema
    for method in sorted(route.methods)
]


@pytest.mark.parametrize(("method", "path", "route"), V1_ROUTES, ids=[f"{m} {p}" for m, p, _ in V1_ROUTES])
def test_every_status_a_route_can_give_is_documented(
    openapi: dict, method: str, path: str, route: APIRoute
) -> None:
    """Statuses that come from what the route runs, not from its own code, were left out: the body
    limits' 413 and 422 on every POST (predict and cancel lacked 413), the job store's 503 on every
    route that reads a job (weights, export and predict lacked it). Schemathesis fails on such."""
    responses = set(openapi["paths"][path][method.lower()]["responses"])
    calls = _calls(route.dependant)
    if method in ("POST", "PUT", "PATCH"):  # app.core.limits: size, nesting, lone surrogates
        assert {"413", "422"} <= responses, (method, path, responses)
    if route.body_field is not None and "multipart/form-data" not in str(route.openapi_extra):
        assert "400" in responses, (method, path, responses)  # FastAPI's "error parsing the body"
    if get_engine in calls:  # the job store down
        assert "503" in responses, (method, path, responses)
    assert {"401", "429"} <= responses, (method, path, responses)  # the guard
