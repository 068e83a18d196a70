"""Graph models against torch built by hand: outputs with copied weights, parameters, FLOPs
(FlopCounterMode), training memory (what autograd saves on real tensors), /fit, and the exports
(the Python file and ONNX in onnxruntime) reproducing the built module.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from test_reference_cnns import convnext_spec
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layers import GraphSpec
from layers.analysis.graph_trace import trace_graph

SUMMARY = "/v1/models/summary"
TRAINING = {"optimizer": {"type": "Adam"}, "device": "cpu"}


def two_heads(batch: int = 4) -> dict:
    """Two inputs, a skip (Add), a split (Chunk) and two heads, one tied to the input projection."""
    return {
        "inputs": {"x": {"shape": [batch, 8]}, "z": {"shape": [batch, 16]}},
        "nodes": [
            {"name": "proj", "type": "Linear", "out_features": 16, "input": "x"},
            {"name": "body", "type": "Linear", "out_features": 16, "input": "proj"},
            {"name": "act", "type": "Tanh", "input": "body"},
            {"name": "skip", "type": "Add", "inputs": ["act", "proj", "z"]},
            {"name": "halves", "type": "Chunk", "chunks": 2, "dim": -1, "input": "skip"},
            {"name": "cls", "type": "Linear", "out_features": 3, "input": "halves.0"},
            {"name": "both", "type": "Concat", "dim": -1, "inputs": ["halves.1", "cls"]},
            {"name": "reg", "type": "Linear", "out_features": 1, "input": "both"},
        ],
        "outputs": {"logits": "cls", "value": "reg"},
    }


class TwoHeads(nn.Module):
    """``two_heads`` written in torch."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.body = nn.Linear(16, 16)
        self.cls = nn.Linear(8, 3)
        self.reg = nn.Linear(11, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        proj = self.proj(x)
        skip = torch.tanh(self.body(proj)) + proj + z
        first, second = skip.chunk(2, dim=-1)
        logits = self.cls(first)
        return {"logits": logits, "value": self.reg(torch.cat([second, logits], dim=-1))}


def built(client: TestClient, model: dict) -> tuple[dict, nn.Module]:
    """The summary, and the module the exported code builds (seed 0)."""
    response = client.post(SUMMARY, json={"model": model})
    assert response.status_code == 200, response.text[:500]
    code = client.post("/v1/models/export", json={"model": model, "format": "pytorch"})
    assert code.status_code == 200, code.text[:500]
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(code.text, "model.py", "exec"), namespace)  # the file under test
    torch.manual_seed(0)
    return response.json(), namespace["build_model"]()


def test_two_heads_equal_torch_in_outputs_params_and_flops(client: TestClient) -> None:
    summary, model = built(client, two_heads())
    reference = TwoHeads()
    reference.load_state_dict(model.state_dict(), strict=True)  # the same names
    x, z = torch.randn(4, 8), torch.randn(4, 16)
    got, expected = model(x=x, z=z), reference(x, z)
    assert list(got) == ["logits", "value"]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    assert summary["total_params"] == sum(p.numel() for p in reference.parameters())
    with FlopCounterMode(display=False) as counter:
        reference(x, z)
    assert summary["flops"] == counter.get_total_flops()


def test_the_summary_draws_the_graph(client: TestClient) -> None:
    summary, _ = built(client, two_heads())
    graph = summary["graph"]
    assert graph["inputs"] == {
        "x": {"shape": [4, 8], "dtype": "float32"},
        "z": {"shape": [4, 16], "dtype": "float32"},
    }
    assert graph["outputs"] == {
        "logits": {"node": "cls", "shape": [4, 3]},
        "value": {"node": "reg", "shape": [4, 1]},
    }
    assert graph["edges"][3:6] == [
        {"from": "act", "to": "skip", "arg": "inputs.0"},
        {"from": "proj", "to": "skip", "arg": "inputs.1"},
        {"from": "z", "to": "skip", "arg": "inputs.2"},
    ]
    rows = {row["path"]: row for row in summary["layers"]}
    assert list(rows) == ["proj", "body", "act", "skip", "halves", "cls", "both", "reg"]
    assert rows["skip"]["node"] == "skip" and rows["skip"]["input_shapes"] == [[4, 16]] * 3
    assert rows["halves"]["output_shapes"] == [[4, 8], [4, 8]]
    assert rows["both"]["input_shapes"] == [[4, 8], [4, 3]] and rows["both"]["output_shapes"] == [[4, 11]]
    assert summary["model"]["nodes"][3] == {"type": "Add", "name": "skip", "inputs": ["act", "proj", "z"]}


def test_a_sequence_summary_has_no_graph_fields(client: TestClient) -> None:
    response = client.post(SUMMARY, json={"model": {"layers": [{"type": "ReLU"}]}, "input_shape": [2, 3]})
    assert "graph" not in response.json()
    assert not {"node", "input_shapes", "output_shapes"} & set(response.json()["layers"][0])


def conv(name: str, ref: str, out: int, kernel: int = 3) -> dict:
    return {
        "name": name,
        "type": "Conv2d",
        "out_channels": out,
        "kernel_size": kernel,
        "padding": kernel // 2,
        "input": ref,
    }


def test_a_flat_unet_with_named_skips_equals_the_container_version(client: TestClient) -> None:
    nested = {
        "layers": [
            {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
            {"type": "ReLU"},
            {
                "type": "Concat",
                "dim": 1,
                "branches": [
                    [
                        {"type": "MaxPool2d", "kernel_size": 2},
                        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
                        {"type": "ReLU"},
                        {"type": "Upsample", "scale_factor": 2},
                    ],
                    [],
                ],
            },
            {"type": "Conv2d", "out_channels": 2, "kernel_size": 1},
        ]
    }
    flat = {
        "inputs": {"image": {"shape": [2, 3, 16, 16]}},
        "nodes": [
            conv("down", "image", 8),
            {"name": "skip", "type": "ReLU", "input": "down"},
            {"name": "pool", "type": "MaxPool2d", "kernel_size": 2, "input": "skip"},
            conv("inner", "pool", 16),
            {"name": "act", "type": "ReLU", "input": "inner"},
            {"name": "up", "type": "Upsample", "scale_factor": 2, "input": "act"},
            {"name": "cat", "type": "Concat", "dim": 1, "inputs": ["up", "skip"]},
            conv("head", "cat", 2, kernel=1),
        ],
        "outputs": {"mask": "head"},
    }
    a = client.post(SUMMARY, json={"model": nested, "input_shape": [2, 3, 16, 16]}).json()
    b = client.post(SUMMARY, json={"model": flat}).json()
    assert a["total_params"] == b["total_params"] > 0
    assert a["flops"] == b["flops"] > 0
    assert a["output_shape"] == b["graph"]["outputs"]["mask"]["shape"] == [2, 2, 16, 16]


def saved_bytes(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Bytes autograd keeps for backward on a real forward, each storage once, weights apart."""
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in weights:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs)
    return sum(seen.values())


def test_training_memory_of_a_graph_is_what_autograd_saves(client: TestClient) -> None:
    model = two_heads(batch=64)
    response = client.post(SUMMARY, json={"model": model, "training": TRAINING})
    assert response.status_code == 200, response.text[:500]
    estimated = response.json()["memory"]["breakdown"]["activations"]
    _, module = built(client, model)
    measured = saved_bytes(module, {"x": torch.randn(64, 8), "z": torch.randn(64, 16)})
    assert measured > 0
    assert abs(estimated - measured) <= 0.02 * measured


def test_fit_moves_the_batch_of_every_input(client: TestClient) -> None:
    limit = 200_000
    body = {
        "model": two_heads(),
        "optimizer": {"type": "Adam"},
        "device": "cpu",
        "device_memory_bytes": limit,
    }
    response = client.post("/v1/models/fit", json=body)
    assert response.status_code == 200, response.text[:500]
    best = response.json()["max_batch_size"]

    def peak(batch: int) -> int:
        answer = client.post(SUMMARY, json={"model": two_heads(batch), "training": TRAINING})
        return answer.json()["memory"]["training_peak_bytes"]

    assert response.json()["max_batch_peak_bytes"] == peak(best) <= limit < peak(best + 1)


def test_exported_code_reads_like_fx_and_reproduces_the_built_module(client: TestClient) -> None:
    code = client.post("/v1/models/export", json={"model": two_heads(), "format": "pytorch"}).text
    assert "    def forward(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:\n" in code
    assert "        skip = self.skip(act, proj, z)\n        halves = self.halves(skip)\n" in code
    assert '        return {"logits": cls, "value": reg}\n' in code
    torch.manual_seed(0)
    service = trace_graph(GraphSpec.model_validate(two_heads())).spec.build()  # inferred, then built
    _, exported = built(client, two_heads())
    exported.load_state_dict(service.state_dict(), strict=True)
    x, z = torch.randn(4, 8), torch.randn(4, 16)
    for name, out in service(x=x, z=z).items():
        torch.testing.assert_close(exported(x=x, z=z)[name], out, rtol=0, atol=0)


def test_ties_across_nodes_are_one_tensor_in_the_build_and_the_code(client: TestClient) -> None:
    model = {
        "inputs": {"tokens": {"shape": [2, 5], "dtype": "int64"}},
        "nodes": [
            {"name": "tok", "type": "Embedding", "num_embeddings": 11, "embedding_dim": 6, "input": "tokens"},
            {
                "name": "lm",
                "type": "Linear",
                "out_features": 11,
                "bias": False,
                "tie_weight": "tok",
                "input": "tok",
            },
        ],
        "outputs": {"logits": "lm"},
    }
    summary, exported = built(client, model)
    assert summary["total_params"] == 66
    assert summary["layers"][1]["params"][0]["tied_to"] == "tok"
    assert exported.lm.weight is exported.tok.weight


def test_onnx_has_named_inputs_and_outputs_and_computes_what_torch_does(client: TestClient) -> None:
    response = client.post("/v1/models/export", json={"model": two_heads(), "format": "onnx"})
    assert response.status_code == 200, response.text[:500]
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "z"]
    assert [o.name for o in session.get_outputs()] == ["logits", "value"]
    _, model = built(client, two_heads())  # seed 0, as the export
    model.eval()
    for batch in (1, 5):  # the batch dimension is dynamic in every input
        x, z = torch.randn(batch, 8), torch.randn(batch, 16)
        with torch.no_grad():
            expected = model(x=x, z=z)
        got = session.run(None, {"x": x.numpy(), "z": z.numpy()})
        for array, name in zip(got, expected, strict=True):
            np.testing.assert_allclose(array, expected[name].numpy(), atol=1e-5)


def bert(batch: int = 1, length: int = 128, d: int = 768, layers: int = 12, vocab: int = 30522) -> dict:
    """BERT (base by default) as a graph: word, token-type and position embeddings, post-norm
    encoder layers, the pooler (the first token through a tanh Linear)."""
    ids = {"shape": [batch, length], "dtype": "int64"}
    layer = {
        "type": "TransformerEncoderLayer",
        "nhead": d // 64 or 2,
        "dim_feedforward": 4 * d,
        "activation": "gelu",
    }
    return {
        "inputs": {"tokens": ids, "types": ids},
        "nodes": [
            {
                "name": "tok",
                "type": "Embedding",
                "num_embeddings": vocab,
                "embedding_dim": d,
                "input": "tokens",
            },
            {"name": "typ", "type": "Embedding", "num_embeddings": 2, "embedding_dim": d, "input": "types"},
            {"name": "emb", "type": "Add", "inputs": ["tok", "typ"]},
            {"name": "pos", "type": "PositionalEmbedding", "num_positions": 512, "input": "emb"},
            {"name": "norm", "type": "LayerNorm", "eps": 1e-12, "input": "pos"},
            {"name": "enc", "type": "Repeat", "times": layers, "input": "norm", "layers": [layer]},
            {"name": "first", "type": "Select", "dim": 1, "index": 0, "input": "enc"},
            {"name": "pool", "type": "Linear", "out_features": d, "input": "first"},
            {"name": "pooled", "type": "Tanh", "input": "pool"},
        ],
        "outputs": {"hidden": "enc", "pooled": "pooled"},
    }


def test_a_small_bert_exports_to_code_and_onnx_that_reproduce_it(client: TestClient) -> None:
    model = bert(batch=2, length=6, d=16, layers=2, vocab=50)
    torch.manual_seed(0)
    service = trace_graph(GraphSpec.model_validate(model)).spec.build().eval()
    _, exported = built(client, model)
    exported.load_state_dict(service.state_dict(), strict=True)
    exported.eval()
    onnx_file = client.post("/v1/models/export", json={"model": model, "format": "onnx"})
    assert onnx_file.status_code == 200, onnx_file.text[:500]
    session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    _, fresh = built(client, model)  # seed 0, as the ONNX export
    fresh.eval()
    tokens, types = torch.randint(0, 50, (3, 6)), torch.randint(0, 2, (3, 6))
    with torch.no_grad():
        expected, got = service(tokens=tokens, types=types), exported(tokens=tokens, types=types)
        initialised = fresh(tokens=tokens, types=types)
    ran = session.run(None, {"tokens": tokens.numpy(), "types": types.numpy()})
    for array, name in zip(ran, expected, strict=True):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
        np.testing.assert_allclose(array, initialised[name].numpy(), atol=1e-5)


def test_bert_base_as_a_graph_has_its_published_parameters(client: TestClient) -> None:
    response = client.post(SUMMARY, json={"model": bert()})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["total_params"] == 109_482_240
    assert response.json()["graph"]["outputs"]["pooled"]["shape"] == [1, 768]


def test_convnext_tiny_as_a_graph_has_torchvisions_parameters(client: TestClient) -> None:
    layers = convnext_spec()["layers"]
    stem, body, head = layers[:4], layers[4:-4], layers[-4:]
    model = {
        "inputs": {"image": {"shape": [1, 3, 64, 64]}},
        "nodes": [
            {"name": "stem", "type": "Sequential", "layers": stem, "input": "image"},
            {"name": "stages", "type": "Sequential", "layers": body, "input": "stem"},
            {"name": "head", "type": "Sequential", "layers": head, "input": "stages"},
        ],
        "outputs": {"logits": "head"},
    }
    response = client.post(SUMMARY, json={"model": model})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["total_params"] == 28_589_128


@pytest.mark.parametrize("dtype", ["float32", "bool"])
def test_inputs_of_each_dtype_reach_the_nodes(client: TestClient, dtype: str) -> None:
    model = {
        "inputs": {"x": {"shape": [2, 4]}, "gate": {"shape": [2, 4], "dtype": dtype}},
        "nodes": [{"name": "m", "type": "Multiply", "inputs": ["x", "gate"]}],
        "outputs": {"y": "m"},
    }
    response = client.post(SUMMARY, json={"model": model})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["graph"]["inputs"]["gate"]["dtype"] == dtype
