"""The summary API's contract: fields, forward order and paths, dtypes, memory, inferred specs.

Every expected number comes from a torch module built here by hand and measured, not from the
service's own code.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_modules import ConvBlock, MyConv2d, MyLinear, Residual, count_params, output_shapes

from app.analysis import summarize
from app.examples import SEED_MODEL, SUMMARY_EXAMPLES
from app.schemas.summary import SummaryRequest
from layers import GraphSpec, ModelSpec
from layers.analysis.graph_trace import trace_graph
from layers.analysis.trace import trace_model

URL = "/v1/models/summary"


def post(client, model: dict, shape: list[int], dtype: str | None = None) -> dict:
    body = {"model": model, "input_shape": shape} | ({"input_dtype": dtype} if dtype else {})
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_my_linear_weight_is_out_by_in(client) -> None:
    summary = post(client, {"layers": [{"type": "MyLinear", "in_features": 10, "out_features": 5}]}, [4, 10])
    params = summary["layers"][0]["params"]
    assert params == [
        {"name": "linear.weight", "shape": [5, 10], "numel": 50, "trainable": True, "tied_to": None},
        {"name": "linear.bias", "shape": [5], "numel": 5, "trainable": True, "tied_to": None},
    ]
    assert summary["model_repr"] == str(nn.Sequential(MyLinear(10, 5)))


def test_my_conv2d_has_no_bias(client) -> None:
    spec = {"type": "MyConv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3}
    summary = post(client, {"layers": [spec]}, [2, 3, 8, 8])
    assert summary["layers"][0]["params"] == [
        {"name": "conv.weight", "shape": [6, 3, 3, 3], "numel": 162, "trainable": True, "tied_to": None}
    ]
    assert summary["model_repr"] == str(nn.Sequential(MyConv2d(3, 6, 3)))


def test_seed_model_matches_hand_written_torch(client) -> None:
    summary = post(client, SEED_MODEL, [2, 3, 8, 8])
    reference = nn.Sequential(MyConv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), MyLinear(6 * 6 * 6, 10))
    assert summary["model_repr"] == str(reference)
    assert summary["total_params"] == count_params(reference)[0] == 162 + 216 * 10 + 10
    shapes, out = output_shapes(reference, torch.randn(2, 3, 8, 8))
    assert summary["output_shape"] == out == [2, 10]
    assert [layer["output_shape"] for layer in summary["layers"]] == [shapes[str(i)] for i in range(4)]
    assert summary["model"]["layers"][3]["in_features"] == 216


NESTED = {
    "layers": [
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {
            "type": "Residual",
            "layers": [
                {
                    "type": "Sequential",
                    "layers": [
                        {"type": "ConvBlock", "out_channels": 8},
                        {"type": "ConvBlock", "out_channels": 8},
                    ],
                }
            ],
            "shortcut": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 1, "bias": False}],
        },
        {
            "type": "Concat",
            "branches": [
                [{"type": "Identity"}],
                [{"type": "MaxPool2d", "kernel_size": 3, "stride": 1, "padding": 1}],
            ],
        },
        {"type": "Flatten"},
    ]
}


def nested_reference() -> nn.Sequential:
    from torch_modules import Concat

    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        Residual(
            nn.Sequential(nn.Sequential(ConvBlock(4, 8), ConvBlock(8, 8))),
            nn.Sequential(nn.Conv2d(4, 8, 1, bias=False)),
        ),
        Concat([nn.Sequential(nn.Identity()), nn.Sequential(nn.MaxPool2d(3, 1, 1))]),
        nn.Flatten(),
    )


def test_nested_containers_paths_depths_and_forward_order(client) -> None:
    summary = post(client, NESTED, [2, 3, 6, 6])
    rows = [(layer["path"], layer["type"], layer["depth"]) for layer in summary["layers"]]
    assert rows == [
        ("0", "Conv2d", 0),
        ("1", "Residual", 0),
        ("1.layers.0", "Sequential", 1),
        ("1.layers.0.0", "ConvBlock", 2),
        ("1.layers.0.1", "ConvBlock", 2),
        ("1.shortcut.0", "Conv2d", 1),
        ("2", "Concat", 0),
        ("2.branches.0.0", "Identity", 1),
        ("2.branches.1.0", "MaxPool2d", 1),
        ("3", "Flatten", 0),
    ]
    reference = nested_reference()
    assert summary["model_repr"] == str(reference)
    modules = dict(reference.named_modules())
    shapes, out = output_shapes(reference, torch.randn(2, 3, 6, 6))
    assert summary["output_shape"] == out == [2, 16 * 36]
    for layer in summary["layers"]:
        module = modules[layer["path"]]  # every path is a real module path of the built model
        assert layer["output_shape"] == shapes[layer["path"]], layer["path"]
        assert layer["num_params"] == count_params(module)[0], layer["path"]
    # a container lists no parameters of its own: its children do, each exactly once
    by_path = {layer["path"]: layer for layer in summary["layers"]}
    assert by_path["1"]["params"] == by_path["1.layers.0"]["params"] == []
    assert [p["name"] for p in by_path["1.layers.0.0"]["params"]] == ["conv.weight", "bn.weight", "bn.bias"]
    listed = sum(p["numel"] for layer in summary["layers"] for p in layer["params"])
    assert listed == summary["total_params"] == count_params(reference)[0]
    # the inputs each node received
    assert by_path["1.shortcut.0"]["input_shape"] == [2, 4, 6, 6]
    assert by_path["2.branches.1.0"]["input_shape"] == [2, 8, 6, 6]


def test_memory_figures_match_torch(client) -> None:
    model = {
        "layers": [
            {"type": "Conv2d", "out_channels": 4, "kernel_size": 3},
            {"type": "BatchNorm2d"},
            {"type": "ReLU"},
        ]
    }
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    summary = post(client, model, [2, 3, 8, 8])
    assert summary["param_bytes"] == sum(p.numel() * p.element_size() for p in reference.parameters())
    # running_mean, running_var (float32) and num_batches_tracked (int64)
    assert (
        summary["buffer_bytes"]
        == sum(b.numel() * b.element_size() for b in reference.buffers())
        == 4 * 4 * 2 + 8
    )
    shapes, _ = output_shapes(reference, torch.randn(2, 3, 8, 8))
    assert summary["activation_bytes"] == sum(4 * torch.Size(s).numel() for s in shapes.values())


@pytest.mark.parametrize(
    ("dtype", "itemsize"), [("float16", 2), ("bfloat16", 2), ("float64", 8), ("float32", 4)]
)
def test_parameters_follow_a_floating_input_dtype(client, dtype: str, itemsize: int) -> None:
    summary = post(client, {"layers": [{"type": "Linear", "out_features": 3}]}, [2, 5], dtype)
    assert summary["input_dtype"] == summary["param_dtype"] == dtype
    assert summary["param_bytes"] == (5 * 3 + 3) * itemsize
    assert summary["activation_bytes"] == 2 * 3 * itemsize


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_token_ids_feed_an_embedding_with_float32_weights(client, dtype: str) -> None:
    model = {
        "layers": [
            {"type": "Embedding", "num_embeddings": 50, "embedding_dim": 8},
            {"type": "Linear", "out_features": 2},
        ]
    }
    summary = post(client, model, [4, 9], dtype)
    assert summary["param_dtype"] == "float32"
    reference = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 2))
    _, out = output_shapes(reference, torch.randint(0, 50, (4, 9), dtype=getattr(torch, dtype)))
    assert summary["output_shape"] == out == [4, 9, 2]
    assert summary["param_bytes"] == 4 * count_params(reference)[0]


def test_flops_are_forward_flops_and_mult_adds_half_of_them(client) -> None:
    summary = post(client, {"layers": [{"type": "Linear", "in_features": 7, "out_features": 3}]}, [5, 7])
    assert summary["mult_adds"] == 5 * 7 * 3  # one multiply-add per weight per sample
    assert summary["flops"] == 2 * summary["mult_adds"]
    assert summary["layers"][0]["flops"] == summary["flops"]


def test_container_flops_are_the_sum_of_their_children(client) -> None:
    summary = post(client, NESTED, [2, 3, 6, 6])
    by_path = {layer["path"]: layer for layer in summary["layers"]}
    children = ["1.layers.0", "1.shortcut.0"]
    assert by_path["1"]["flops"] == sum(by_path[p]["flops"] for p in children) > 0
    assert summary["flops"] == sum(layer["flops"] for layer in summary["layers"] if layer["depth"] == 0)


def test_recurrent_last_step_and_sequence(client) -> None:
    sequence = post(
        client, {"layers": [{"type": "GRU", "hidden_size": 6, "bidirectional": True}]}, [3, 11, 4]
    )
    last = post(
        client,
        {"layers": [{"type": "GRU", "hidden_size": 6, "bidirectional": True, "output": "last"}]},
        [3, 11, 4],
    )
    reference = nn.GRU(4, 6, bidirectional=True, batch_first=True)
    out, _ = reference(torch.randn(3, 11, 4))
    assert sequence["output_shape"] == list(out.shape) == [3, 11, 12]
    assert last["output_shape"] == list(out[:, -1].shape) == [3, 12]
    assert sequence["total_params"] == last["total_params"] == count_params(reference)[0]


def test_returned_model_spec_is_complete_and_stable(client) -> None:
    first = post(client, NESTED, [2, 3, 6, 6])
    again = post(client, first["model"], [2, 3, 6, 6])  # the fully inferred spec is itself valid
    assert again["model"] == first["model"]
    assert {k: v for k, v in again.items()} == first
    # every size that was omitted is now filled in
    assert first["model"]["layers"][1]["layers"][0]["layers"][0]["in_channels"] == 4
    assert first["model"]["layers"][1]["shortcut"][0]["in_channels"] == 4


def test_api_answer_equals_the_library_call(client) -> None:
    summary = post(client, NESTED, [2, 3, 6, 6])
    assert summary == summarize(ModelSpec.model_validate(NESTED), (2, 3, 6, 6)).model_dump(mode="json")


def test_repeated_requests_with_other_shapes_are_not_confused(client) -> None:
    model = {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 2}]}
    a = post(client, model, [2, 3, 4])
    b = post(client, model, [5, 3, 4])
    c = post(client, model, [2, 3, 4], "float64")
    assert a["output_shape"] == [2, 2] and b["output_shape"] == [5, 2]
    assert c["param_bytes"] == 2 * a["param_bytes"]
    assert post(client, model, [2, 3, 4]) == a


def test_summary_never_allocates_weights(client) -> None:
    """A trillion-parameter layer (4 TB of float32) is summarised: only meta tensors exist."""
    n = 1 << 20
    summary = post(client, {"layers": [{"type": "Linear", "in_features": n, "out_features": n}]}, [1, n])
    assert summary["total_params"] == n * n + n
    assert summary["param_bytes"] == 4 * (n * n + n)
    traced = trace_model(
        ModelSpec.model_validate({"layers": [{"type": "Linear", "out_features": n}]}), (1, n)
    )
    assert all(p.is_meta for p in traced.module.parameters())


def test_the_inferred_spec_builds_the_real_model(client) -> None:
    summary = post(client, NESTED, [2, 3, 6, 6])
    traced = trace_model(ModelSpec.model_validate(NESTED), (2, 3, 6, 6))
    model = traced.spec.build()
    assert not any(p.is_meta for p in model.parameters())
    assert str(model) == summary["model_repr"]
    assert list(model(torch.randn(2, 3, 6, 6)).shape) == summary["output_shape"]


@pytest.mark.parametrize("name", sorted(SUMMARY_EXAMPLES))
def test_swagger_examples_succeed(client, name: str) -> None:
    response = client.post(URL, json=SUMMARY_EXAMPLES[name]["value"])
    assert response.status_code == 200, response.text
    request = SummaryRequest.model_validate(SUMMARY_EXAMPLES[name]["value"])
    if isinstance(request.model, GraphSpec):
        traced = trace_graph(request.model)
    else:
        traced = trace_model(request.model, tuple(request.input_shape), request.input_dtype)
    torch.manual_seed(0)
    model = traced.spec.build()
    assert response.json()["total_params"] == count_params(model)[0]
    assert response.json()["model_repr"] == str(model)


def test_concurrent_summaries_do_not_interfere() -> None:
    """The API traces in a thread pool: meta-device and FLOP-counter modes must stay per thread."""
    from concurrent.futures import ThreadPoolExecutor

    from test_reference_models import REFERENCES

    jobs = [(ref.spec, tuple(ref.input_shape), ref.input_dtype) for ref in REFERENCES.values()] * 4
    alone = [summarize(ModelSpec.model_validate(s), shape, dtype) for s, shape, dtype in jobs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda job: summarize(ModelSpec.model_validate(job[0]), *job[1:]), jobs))
    assert together == alone
    # and nothing leaked out of the threads into this one: new tensors are real, on the CPU
    assert torch.empty(1).device.type == "cpu"
    assert nn.Linear(2, 2).weight.device.type == "cpu"
