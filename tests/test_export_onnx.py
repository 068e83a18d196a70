"""ONNX export (POST /v1/models/export, format "onnx"): checked by onnx.checker, run in
onnxruntime against torch at another batch size than the traced one, and a layer the exporter
cannot take is a 422 naming it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_reference_cnns import convnext_block

from layers.export.onnx_export import OPSET

MODELS = {
    "cnn": (
        [
            {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
            {"type": "BatchNorm2d"},
            {"type": "ReLU"},
            {"type": "MaxPool2d", "kernel_size": 2},
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 10},
        ],
        [4, 3, 8, 8],
    ),
    "lstm": (
        [
            {"type": "LSTM", "hidden_size": 12, "num_layers": 2, "bidirectional": True, "output": "last"},
            {"type": "Linear", "out_features": 3},
        ],
        [4, 7, 5],
    ),
    "transformer": (
        [
            {"type": "TransformerEncoderLayer", "nhead": 4, "dim_feedforward": 32, "norm_first": True},
            {"type": "LayerNorm"},
        ],
        [4, 6, 16],
    ),
    "convnext_ceil_pools": (  # issue 18: LayerScale, StochasticDepth (identity in eval), ceil_mode
        [
            {"type": "Conv2d", "out_channels": 8, "kernel_size": 3},
            {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "ceil_mode": True},
            convnext_block(8, 0.2, init=0.5),  # a layer scale large enough to show
            {"type": "AvgPool2d", "kernel_size": 2, "ceil_mode": True},
            {"type": "Flatten"},
        ],
        [4, 3, 12, 12],
    ),
    "attention_biases": (  # issue 18: a bias on q and v only; torch's add_bias_kv
        [
            {"type": "CausalSelfAttention", "num_heads": 2, "qkv_bias": [True, False, True]},
            {"type": "MultiheadAttention", "num_heads": 2, "add_bias_kv": True},
        ],
        [4, 6, 16],
    ),
}


def export(client, layers: list, input_shape: list[int], fmt: str):
    body = {"model": {"layers": layers}, "input_shape": input_shape, "format": fmt}
    return client.post("/v1/models/export", json=body)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_computes_what_torch_computes(client, name: str) -> None:
    layers, input_shape = MODELS[name]
    response = export(client, layers, input_shape, "onnx")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert 'filename="model.onnx"' in response.headers["content-disposition"]
    proto = onnx.load_from_string(response.content)
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}

    # The same freshly initialised model, from the exported Python file (seed 0, as the export).
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(export(client, layers, input_shape, "pytorch").text, "model.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["build_model"]().eval()
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        x = torch.randn(batch, *input_shape[1:])
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)


def test_a_layer_the_exporter_cannot_take_is_a_422_naming_it(client) -> None:
    # torch 2.13's dynamo exporter cannot export a bidirectional LSTM with projections (proj_size).
    layers = [
        {"type": "Linear", "out_features": 6},
        {"type": "LSTM", "hidden_size": 6, "proj_size": 3, "bidirectional": True},
    ]
    response = export(client, layers, [2, 5, 4], "onnx")
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "model", "layers", 1]
    assert detail["type"] == "export_unsupported"
    assert detail["msg"].startswith("LSTM at module path '1' cannot be exported to ONNX")
    assert export(client, layers, [2, 5, 4], "pytorch").status_code == 200  # as code it is fine


def test_onnx_export_refuses_models_too_big_to_build(client) -> None:
    layers = [{"type": "Linear", "out_features": 1 << 20}, {"type": "Linear", "out_features": 1 << 10}]
    response = export(client, layers, [2, 1024], "onnx")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "model"]
    assert export(client, layers, [2, 1024], "pytorch").status_code == 200  # code costs nothing


def test_the_failing_layer_is_found_by_bisection_among_many(client) -> None:
    # Repeat's copies are alike (tried once); the LSTM is the 7th leaf, after distinct Linears.
    layers = [{"type": "Linear", "out_features": 6 + i} for i in range(5)]
    layers += [
        {"type": "Repeat", "times": 3, "layers": [{"type": "Linear", "out_features": 10}]},
        {"type": "LSTM", "hidden_size": 6, "proj_size": 3, "bidirectional": True},
        {"type": "ReLU"},
    ]
    response = export(client, layers, [2, 5, 4], "onnx")
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "model", "layers", 6]
    assert detail["msg"].startswith("LSTM at module path '6' cannot be exported to ONNX")
