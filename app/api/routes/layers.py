"""The layer catalog: every registered type with its JSON schema, for forms."""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from layers import LAYER_SPECS
from layers.language.graph import NODE_CLASSES
from layers.language.graph_specs import GRAPH_SPECS
from layers.language.spec import closest_name

router = APIRouter(prefix="/layers", tags=["layers"])


class LayerType(BaseModel):
    type: str
    category: str
    description: str
    json_schema: dict = Field(alias="schema", description="JSON schema of the layer's fields")
    tensor_args: list[str] = Field(
        description="the tensor arguments a graph node of this type may be wired to by name, "
        "besides its input (a decoder's `memory`, masks)"
    )
    required_tensor_args: list[str] = Field(
        description="those it needs: a layer with any is usable only as a graph node"
    )
    graph_only: bool = Field(
        False,
        description="a node of the graph form only (a merge with `inputs`, or a split with several "
        "outputs); its schema is the node's, wiring included",
    )

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class LayerCatalog(BaseModel):
    data: list[LayerType]
    count: int


@cache
def catalog() -> dict[str, LayerType]:
    return {
        name: LayerType(
            type=name,
            category=spec.category,
            description=spec.description(),
            json_schema=spec.model_json_schema(),
            tensor_args=list(spec.tensor_args),
            required_tensor_args=list(spec.required_tensor_args),
        )
        for name, spec in LAYER_SPECS.items()
    }


@cache
def graph_only() -> list[LayerType]:
    """The graph form's own node types (``Concat`` and ``Multiply`` are also containers)."""
    nodes = {cls.layer_class: cls for cls in NODE_CLASSES.values()}
    return [
        LayerType(
            type=name,
            category=spec.category,
            description=spec.description(),
            json_schema=nodes[spec].model_json_schema(),
            tensor_args=[],
            required_tensor_args=[],
            graph_only=True,
        )
        for name, spec in GRAPH_SPECS.items()
    ]


@router.get("")
def list_layers() -> LayerCatalog:
    """Every layer type, then the graph form's own node types: name, category, one-line
    description and field schema."""
    data = [*catalog().values(), *graph_only()]
    return LayerCatalog(data=data, count=len(data))


@router.get("/{layer_type}", responses={404: {"description": "no such layer type"}})
def get_layer(
    layer_type: Annotated[str, Path(openapi_examples={"linear": {"summary": "Linear", "value": "Linear"}})],
) -> LayerType:
    """One layer type."""
    found = catalog().get(layer_type) or next((t for t in graph_only() if t.type == layer_type), None)
    if found is None:
        close = closest_name(layer_type, list(LAYER_SPECS))
        hint = f"did you mean {close!r}? " if close else ""
        raise HTTPException(404, f"unknown layer type {layer_type!r}; {hint}GET /v1/layers lists them")
    return found
