"""The graph form's bad input, through the HTTP API: each rule a 422 at the node's ``loc``, naming it.

The wiring is checked before anything is built (``GraphSpec.check``), shapes at merges while
tracing; the layer and nesting limits count every node, so a huge graph is refused untraced.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import settings


def linear(name: str, ref: str, out: int = 4) -> dict:
    return {"name": name, "type": "Linear", "out_features": out, "input": ref}


def graph(nodes: list[dict], outputs: dict[str, str] | None = None, **inputs: list[int]) -> dict:
    shapes = inputs or {"x": [2, 4]}
    return {
        "inputs": {name: {"shape": shape} for name, shape in shapes.items()},
        "nodes": nodes,
        "outputs": outputs or {"out": nodes[-1]["name"]},
    }


def refused(client: TestClient, model: dict, **request: Any) -> dict:
    """The first error of a summary request that must be a 422."""
    response = client.post("/v1/models/summary", json={"model": model, **request})
    assert response.status_code == 422, response.text[:500]
    return response.json()["detail"][0]


def test_a_node_referring_to_itself_is_a_cycle(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x"), linear("b", "b")]))
    assert error["loc"] == ["body", "model", "nodes", 1, "input"]
    assert "cycle" in error["msg"] and "'b'" in error["msg"]


def test_a_cycle_through_two_nodes_names_its_path(client: TestClient) -> None:
    nodes = [linear("a", "x"), {"name": "s", "type": "Add", "inputs": ["a", "t"]}, linear("t", "s")]
    error = refused(client, graph(nodes))
    assert error["loc"] == ["body", "model", "nodes", 1, "inputs", 1]
    assert "cycle: s -> t -> s" in error["msg"]


def test_a_reference_to_a_later_node_asks_for_topological_order(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "b"), linear("b", "x")], {"out": "a"}))
    assert error["loc"] == ["body", "model", "nodes", 0, "input"]
    assert "comes after" in error["msg"] and "topological" in error["msg"]


def test_an_unknown_ref_is_named_with_the_names_known(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x"), linear("b", "aa")]))
    assert error["loc"] == ["body", "model", "nodes", 1, "input"]
    assert "'aa' names no graph input and no node" in error["msg"] and "did you mean 'a'" in error["msg"]


def test_a_duplicate_node_name_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x"), linear("a", "x")]))
    assert error["loc"] == ["body", "model", "nodes", 1, "name"]
    assert "already taken by node 0" in error["msg"]


def test_a_node_named_like_an_input_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("x", "x")]))
    assert error["loc"] == ["body", "model", "nodes", 0, "name"]
    assert "already taken by the input 'x'" in error["msg"]


def test_a_name_that_cannot_be_a_variable_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("forward", "x")]))
    assert error["loc"] == ["body", "model", "nodes", 0, "name"]
    assert "'forward' cannot name a graph node" in error["msg"]


def test_an_input_nothing_uses_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x")], x=[2, 4], y=[2, 4]))
    assert error["loc"] == ["body", "model", "inputs", "y"]
    assert "'y' is used by no node" in error["msg"]


def test_a_node_nothing_uses_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x"), linear("b", "x")], {"out": "b"}))
    assert error["loc"] == ["body", "model", "nodes", 0]
    assert "'a' (Linear) is used by no node and no output" in error["msg"]


def test_an_output_naming_nothing_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x")], {"out": "a", "extra": "nothing"}))
    assert error["loc"] == ["body", "model", "outputs", "extra"]
    assert "'nothing' names no graph input and no node" in error["msg"]


def test_a_merge_of_shapes_that_do_not_broadcast_names_both(client: TestClient) -> None:
    nodes = [linear("a", "x", 4), linear("b", "x", 5), {"name": "s", "type": "Add", "inputs": ["a", "b"]}]
    error = refused(client, graph(nodes))
    assert error["loc"] == ["body", "model", "nodes", 2, "inputs", 1]
    assert error["type"] == "shape_mismatch"
    assert "'b' [2, 5]" in error["msg"] and "'a' [2, 4]" in error["msg"]


def test_a_concat_of_unequal_shapes_names_both(client: TestClient) -> None:
    nodes = [{"name": "c", "type": "Concat", "dim": 1, "inputs": ["x", "y"]}]
    error = refused(client, graph(nodes, x=[2, 4], y=[3, 4]))
    assert error["loc"] == ["body", "model", "nodes", 0, "inputs", 1]
    assert "'x' is [2, 4], 'y' is [3, 4]" in error["msg"]


def test_a_matmul_of_mismatched_shapes_is_refused(client: TestClient) -> None:
    nodes = [{"name": "m", "type": "MatMul", "inputs": ["x", "y"]}]
    error = refused(client, graph(nodes, x=[2, 4], y=[5, 3]))
    assert error["loc"] == ["body", "model", "nodes", 0, "inputs"]
    assert "'x' [2, 4], 'y' [5, 3]" in error["msg"]


def test_a_matmul_takes_two_inputs(client: TestClient) -> None:
    nodes = [{"name": "m", "type": "MatMul", "inputs": ["x", "x", "x"]}]
    error = refused(client, graph(nodes))
    assert error["loc"][:4] == ["body", "model", "nodes", 0] and error["loc"][-1] == "inputs"


def test_split_sections_that_do_not_sum_to_the_dimension_are_refused(client: TestClient) -> None:
    nodes = [{"name": "s", "type": "Split", "split_size_or_sections": [1, 2], "dim": 1, "input": "x"}]
    error = refused(client, graph(nodes, {"a": "s.0", "b": "s.1"}))
    assert error["loc"] == ["body", "model", "nodes", 0, "input"]
    assert "Split" in error["msg"]


def test_a_node_with_several_outputs_is_referred_to_by_index(client: TestClient) -> None:
    nodes = [{"name": "s", "type": "Chunk", "chunks": 2, "input": "x"}, linear("a", "s")]
    error = refused(client, graph(nodes))
    assert error["loc"] == ["body", "model", "nodes", 1, "input"]
    assert "'s' has 2 outputs: refer to one of them as 's.0', 's.1'" in error["msg"]


def test_an_output_index_past_the_outputs_is_refused(client: TestClient) -> None:
    nodes = [{"name": "s", "type": "Chunk", "chunks": 2, "input": "x"}]
    error = refused(client, graph(nodes, {"a": "s.0", "b": "s.2"}))
    assert error["loc"] == ["body", "model", "outputs", "b"]
    assert "(got 's.2')" in error["msg"]


def test_an_index_on_a_one_output_node_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x")], {"out": "a.0"}))
    assert error["loc"] == ["body", "model", "outputs", "out"]
    assert "'a' has one output" in error["msg"]


def test_a_tensor_argument_the_layer_does_not_take_is_refused(client: TestClient) -> None:
    node = {**linear("a", "x"), "memory": "x"}
    error = refused(client, graph([node]))
    assert error["loc"][:4] == ["body", "model", "nodes", 0]
    assert "Linear takes no tensor argument 'memory' (its tensor arguments: none)" in error["msg"]


def test_a_tensor_argument_is_named_with_those_the_layer_takes(client: TestClient) -> None:
    node = {"name": "a", "type": "TransformerEncoderLayer", "nhead": 2, "input": "x", "memory": "x"}
    error = refused(client, graph([node], x=[2, 3, 4]))
    assert error["loc"][:4] == ["body", "model", "nodes", 0]
    assert (
        "takes no tensor argument 'memory' (its tensor arguments: src_mask, src_key_padding_mask)"
        in error["msg"]
    )


def test_a_container_passes_its_tensor_arguments_to_layers_that_take_them(client: TestClient) -> None:
    layers = [{"type": "TransformerEncoderLayer", "nhead": 2}, {"type": "LayerNorm"}]
    node = {
        "name": "enc",
        "type": "Sequential",
        "layers": layers,
        "input": "x",
        "src_key_padding_mask": "mask",
    }
    model = {
        **graph([node], x=[2, 3, 4]),
        "inputs": {"x": {"shape": [2, 3, 4]}, "mask": {"shape": [2, 3], "dtype": "bool"}},
    }
    error = refused(client, model)
    assert error["loc"] == ["body", "model", "nodes", 0, "src_key_padding_mask"]
    assert "its LayerNorm at 'enc.1' does not take it" in error["msg"]


def test_a_merge_in_a_sequence_says_it_is_of_the_graph_form(client: TestClient) -> None:
    model = {"layers": [{"type": "Linear", "out_features": 4}, {"type": "Add"}]}
    error = refused(client, model, input_shape=[2, 4])
    assert error["loc"] == ["body", "model", "layers", 1]
    assert "node of the graph form only" in error["msg"]


@pytest.mark.parametrize(
    "node", [{"type": "Split", "split_size_or_sections": 2}, {"type": "Chunk", "chunks": 2}]
)
def test_a_split_in_a_sequence_says_it_is_of_the_graph_form(client: TestClient, node: dict) -> None:
    error = refused(client, {"layers": [node]}, input_shape=[2, 4])
    assert error["loc"] == ["body", "model", "layers", 0]
    assert "several outputs" in error["msg"]


def test_a_graph_takes_no_input_shape(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x")]), input_shape=[2, 4])
    assert error["loc"] == ["body", "input_shape"]
    assert "`inputs`" in error["msg"]


def test_a_sequence_still_needs_its_input_shape(client: TestClient) -> None:
    error = refused(client, {"layers": [{"type": "ReLU"}]})
    assert error["loc"] == ["body", "input_shape"] and error["type"] == "missing"


def test_a_graph_input_past_the_input_limits_is_refused(client: TestClient) -> None:
    error = refused(client, graph([linear("a", "x")], x=[2, settings.max_input_dim + 1]))
    assert error["loc"] == ["body", "model", "inputs", "x", "shape", 1]
    assert error["type"] == "limit_exceeded"


def test_a_graph_of_10000_nodes_is_refused_by_the_layer_limit(client: TestClient) -> None:
    nodes = [{"name": "n0", "type": "ReLU", "input": "x"}]
    nodes += [{"name": f"n{i}", "type": "ReLU", "input": f"n{i - 1}"} for i in range(1, 10_000)]
    error = refused(client, graph(nodes))
    assert error["type"] == "limit_exceeded"
    assert error["loc"] == ["body", "model", "nodes", settings.max_layers]


def test_containers_nested_past_the_limit_in_a_node_are_refused(client: TestClient) -> None:
    inner: dict = {"type": "ReLU"}
    for _ in range(settings.max_nesting + 1):
        inner = {"type": "Sequential", "layers": [inner]}
    error = refused(client, graph([{**inner, "name": "deep", "input": "x"}]))
    assert error["type"] == "limit_exceeded"
    assert error["loc"][:4] == ["body", "model", "nodes", 0]
