"""Every registered layer type exported as Python code (POST /v1/models/export) and run from that
file alone: ``build_model()`` gives exactly the summary's model (``print(model)``, parameter
names, shapes and count) and a real forward pass has the summary's output shape.

Parametrised over ``layers.LAYER_SPECS`` with the registry test's samples, so a new layer type
is exported the day it is registered.
"""

from __future__ import annotations

import ast
import importlib.util
import sys

import pytest
import torch
from test_registry import SAMPLES, built_pair, real_input, tensor_args

from app.examples import SUMMARY_EXAMPLES
from layers import LAYER_SPECS, ModelSpec
from layers.analysis.trace import trace_model
from layers.export.codegen import CodeWriter, ExportError, python_file, python_source

ALLOWED_IMPORTS = {"__future__", "torch", "typing", "math"}


def exported(client, body: dict) -> tuple[str, dict]:
    response = client.post("/v1/models/export", json={**body, "format": "pytorch"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/x-python")
    assert 'filename="model.py"' in response.headers["content-disposition"]
    return response.text, client.post("/v1/models/summary", json=body).json()


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    return modules


def run_exported(source: str) -> dict:
    """The file's top level, run in a namespace of its own (it is not ``__main__``)."""
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(source, "model.py", "exec"), namespace)  # the generated file under test
    return namespace


def node_source(layer_type: str) -> str:
    """The file written for a layer that needs tensor arguments (a graph node; a sequence refuses
    it), from its spec inferred on its own: how a graph's export writes the node's module."""
    sample = SAMPLES[layer_type]
    spec = LAYER_SPECS[layer_type].model_validate(sample.spec).infer(tuple(sample.input_shape))
    return python_source(
        ModelSpec(layers=[spec]), tuple(sample.input_shape), torch.float32, torch.float32, "a node"
    )


@pytest.mark.parametrize("layer_type", sorted(LAYER_SPECS))
def test_every_layer_type_round_trips_through_python(layer_type: str, client) -> None:
    sample = SAMPLES.get(layer_type)
    assert sample is not None, f"registered layer type {layer_type!r} has no sample in tests/test_registry.py"
    if LAYER_SPECS[layer_type].required_tensor_args:  # the module written, given its tensor arguments
        source = node_source(layer_type)
        assert imported_modules(source) <= ALLOWED_IMPORTS, imported_modules(source)
        model, (ours, _) = run_exported(source)["build_model"]()[0], built_pair(sample)
        assert str(model) == str(ours)
        model.load_state_dict(ours.state_dict(), strict=True)
        x, tensors = real_input(sample.input_shape, sample.input_dtype), tensor_args(sample)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x, **tensors), ours(x, **tensors))
        return
    body = {
        "model": {"layers": [sample.spec]},
        "input_shape": sample.input_shape,
        "input_dtype": sample.input_dtype,
    }
    source, summary = exported(client, body)
    assert imported_modules(source) <= ALLOWED_IMPORTS, imported_modules(source)

    torch.manual_seed(0)
    model = run_exported(source)["build_model"]()
    assert str(model) == summary["model_repr"]
    ours = {
        f"{layer['path']}.{p['name']}": p["shape"] for layer in summary["layers"] for p in layer["params"]
    }
    assert {name: list(p.shape) for name, p in model.named_parameters()} == ours
    assert sum(p.numel() for p in model.parameters()) == summary["total_params"]
    model.eval()
    with torch.no_grad():
        out = model(real_input(sample.input_shape, sample.input_dtype))
    assert list(out.shape) == summary["output_shape"]


def test_a_nested_model_exports_readably(client) -> None:
    """Containers inside containers, custom modules, a recurrent layer: one file that runs as a script."""
    layers = [
        SAMPLES["ConvBlock"].spec,
        {
            "type": "Residual",
            "layers": [{"type": "MyConv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}],
        },
        SAMPLES["Concat"].spec,
        {"type": "Flatten", "start_dim": 2},
        {"type": "GRU", "hidden_size": 5, "output": "last"},
        {"type": "MyLinear", "out_features": 3},
    ]
    body = {"model": {"layers": layers}, "input_shape": [2, 3, 8, 8]}
    source, summary = exported(client, body)
    namespace = run_exported(source)
    for name in ("ConvBlock", "Residual", "Concat", "MyConv2d", "GRU", "MyLinear", "ACTIVATIONS"):
        assert name in namespace, name
    assert "def build_model() -> nn.Module:" in source and 'if __name__ == "__main__":' in source
    model = namespace["build_model"]()
    assert str(model) == summary["model_repr"]
    assert namespace["INPUT_SHAPE"] == (2, 3, 8, 8)


def test_float64_models_export_in_float64(client) -> None:
    body = {
        "model": {"layers": [{"type": "Linear", "out_features": 2}]},
        "input_shape": [2, 3],
        "input_dtype": "float64",
    }
    source, _ = exported(client, body)
    model = run_exported(source)["build_model"]()
    assert model[0].weight.dtype == torch.float64


def test_a_bad_spec_is_a_422_naming_the_layer(client) -> None:
    body = {
        "model": {"layers": [{"type": "Linear", "in_features": 4, "out_features": 2}]},
        "input_shape": [2, 3],
        "format": "pytorch",
    }
    response = client.post("/v1/models/export", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "model", "layers", 0, "in_features"]
    bad_format = client.post("/v1/models/export", json={**body, "format": "tflite"})
    assert bad_format.status_code == 422
    assert bad_format.json()["detail"][0]["loc"] == ["body", "format"]


@pytest.mark.parametrize("name", sorted(SUMMARY_EXAMPLES))
def test_every_summary_example_exports_as_the_service_builds_it(client, name: str) -> None:
    """The presets (ViT-B/16, GPT-2 small with its tied head, TinyLlama's shape, ...), built on meta
    from their exported code: same module, same parameters, tied weights one tensor."""
    source, summary = exported(client, SUMMARY_EXAMPLES[name]["value"])
    with torch.device("meta"):  # shapes only: a 1.1B-parameter model costs nothing here
        model = run_exported(source)["build_model"]()
    service = summary["model_repr"]
    if "nodes" in SUMMARY_EXAMPLES[name]["value"]["model"]:  # a graph: the file's class is `Model`
        service = service.replace("GraphModule(", "Model(", 1)
    assert str(model) == service
    assert sum(p.numel() for p in model.parameters()) == summary["total_params"]  # tied: counted once


def test_tied_weights_are_one_tensor_in_the_exported_model(client) -> None:
    layers = [
        {"type": "Embedding", "num_embeddings": 11, "embedding_dim": 6, "name": "tokens"},
        {"type": "Repeat", "times": 2, "layers": [{"type": "Linear", "out_features": 6}, {"type": "GELU"}]},
        {"type": "MyLinear", "out_features": 11, "bias": False, "tie_weight": "tokens"},
    ]
    source, summary = exported(
        client, {"model": {"layers": layers}, "input_shape": [2, 5], "input_dtype": "int64"}
    )
    assert "for _ in range(2)" in source  # a Repeat reads as a loop
    model = run_exported(source)["build_model"]()
    assert model[2].linear.weight is model[0].weight
    assert str(model) == summary["model_repr"]
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight",
        "1.0.0.weight",
        "1.0.0.bias",
        "1.1.0.weight",
        "1.1.0.bias",
    ]


def test_a_tie_in_a_residual_shortcut_to_its_body_exports(client) -> None:
    """Issue 21 item 7: the shortcut ties to a layer of the body, which comes first in the model."""
    residual = {
        "type": "Residual",
        "layers": [{"type": "Linear", "out_features": 4, "name": "a"}],
        "shortcut": [{"type": "Linear", "out_features": 4, "tie_weight": "a"}],
    }
    body = {"model": {"layers": [residual]}, "input_shape": [2, 4]}
    source, summary = exported(client, body)
    torch.manual_seed(0)
    model = run_exported(source)["build_model"]()
    assert model[0].shortcut[0].weight is model[0].layers[0].weight
    assert str(model) == summary["model_repr"]
    assert sum(p.numel() for p in model.parameters()) == summary["total_params"] == 4 * 4 + 4 + 4
    x = torch.randn(2, 4)
    body_layer, skip = model[0].layers[0], model[0].shortcut[0]
    expected = x @ body_layer.weight.T + body_layer.bias + x @ body_layer.weight.T + skip.bias
    torch.testing.assert_close(model(x), expected)


PROBE = """
from torch import nn

from layers.language.base import expect_divisible


class Checked(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        expect_divisible(width, heads, "heads", "width")  # a spec's check, in a module
        self.linear = nn.Linear(width, width)
"""


def test_a_module_reading_the_spec_language_is_refused_not_exported(tmp_path) -> None:
    """What checks a spec belongs to the spec: the exporter never copies a spec's error class
    (or what it reads) into the user's file, it names the module that reads it."""
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    loader = importlib.util.spec_from_file_location("layers._export_probe", path)  # our own test file
    probe = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = probe
    try:
        loader.loader.exec_module(probe)
        with pytest.raises(ExportError, match="expect_divisible reads 'ShapeError'"):
            CodeWriter().ref(probe.Checked)
    finally:
        del sys.modules[loader.name]


@pytest.mark.parametrize("layer_type", sorted(LAYER_SPECS))
def test_exported_code_holds_nothing_of_our_tooling(layer_type: str) -> None:
    sample = SAMPLES[layer_type]
    if LAYER_SPECS[layer_type].required_tensor_args:
        source = node_source(layer_type)
    else:
        traced = trace_model(ModelSpec(layers=[sample.spec]), tuple(sample.input_shape), sample.input_dtype)
        source = python_file(traced, "a test").decode()
    names = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    assert not names & {"LayerSpec", "SpecError", "ShapeError", "is_meta", "rotate_on_meta", "eval"}
    assert "# safe" not in source
