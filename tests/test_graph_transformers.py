"""Encoder-decoder and masked graphs against torch: ``nn.Transformer`` written as a graph (its count
at d 512, its output with copied weights and a causal target), and a BERT graph whose padding
mask, passed by its Repeat to every layer, leaves the unpadded outputs unchanged."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient
from test_graph_models import bert
from torch import nn

from layers import GraphSpec
from layers.analysis.graph_trace import trace_graph


def transformer(d: int, nhead: int, layers: int, ff: int, batch: int = 2, src: int = 5, tgt: int = 4) -> dict:
    """nn.Transformer as a graph: encoder layers, their norm, causal decoder layers given `memory`."""
    enc = {"type": "TransformerEncoderLayer", "nhead": nhead, "dim_feedforward": ff}
    dec = {"type": "TransformerDecoderLayer", "nhead": nhead, "dim_feedforward": ff, "causal": True}
    return {
        "inputs": {"src": {"shape": [batch, src, d]}, "tgt": {"shape": [batch, tgt, d]}},
        "nodes": [
            {"name": "encoder", "type": "Repeat", "times": layers, "layers": [enc], "input": "src"},
            {"name": "memory", "type": "LayerNorm", "input": "encoder"},
            {
                "name": "decoder",
                "type": "Repeat",
                "times": layers,
                "layers": [dec],
                "input": "tgt",
                "memory": "memory",
            },
            {"name": "out", "type": "LayerNorm", "input": "decoder"},
        ],
        "outputs": {"out": "out"},
    }


def test_nn_transformer_as_a_graph_has_its_parameters(client: TestClient) -> None:
    response = client.post("/v1/models/summary", json={"model": transformer(512, 8, 6, 2048)})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["total_params"] == 44_140_544
    with torch.device("meta"):
        reference = nn.Transformer(512, 8, 6, 6, 2048, batch_first=True)
    assert sum(p.numel() for p in reference.parameters()) == 44_140_544


def torch_names(key: str) -> str:
    """A graph parameter's name in nn.Transformer (``encoder.3.0.linear1.weight`` ->
    ``encoder.layers.3.linear1.weight``)."""
    node, _, rest = key.partition(".")
    if node in ("encoder", "decoder"):
        copy, _, inner = rest.partition(".")
        return f"{node}.layers.{copy}.{inner.partition('.')[2]}"
    return {"memory": "encoder.norm", "out": "decoder.norm"}[node] + "." + rest


def test_nn_transformer_graph_equals_torch_with_a_causal_target(client: TestClient) -> None:
    spec = trace_graph(GraphSpec.model_validate(transformer(16, 2, 2, 32))).spec
    torch.manual_seed(0)
    model = spec.build().eval()
    reference = nn.Transformer(16, 2, 2, 2, 32, batch_first=True).eval()
    reference.load_state_dict({torch_names(k): v for k, v in model.state_dict().items()}, strict=True)
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    with torch.no_grad():
        expected = reference(src, tgt, tgt_mask=mask, tgt_is_causal=True)
        got = model(src=src, tgt=tgt)["out"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_bert_padding_mask_changes_nothing_in_the_unpadded_outputs(client: TestClient) -> None:
    model = bert(batch=2, length=6, d=16, layers=2, vocab=50)
    model["inputs"]["mask"] = {"shape": [2, 6], "dtype": "bool"}
    model["nodes"][5]["src_key_padding_mask"] = "mask"  # the Repeat passes it to each layer
    response = client.post("/v1/models/summary", json={"model": model})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["graph"]["edges"][7] == {
        "from": "mask",
        "to": "enc",
        "arg": "src_key_padding_mask",
    }
    torch.manual_seed(0)
    built = trace_graph(GraphSpec.model_validate(model)).spec.build().eval()
    tokens, types = torch.randint(0, 50, (2, 6)), torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 4:] = True  # the last two positions are padding
    other = tokens.clone()
    other[:, 4:] = torch.randint(0, 50, (2, 2))  # different padding tokens
    with torch.no_grad():
        a = built(tokens=tokens, types=types, mask=mask)["hidden"]
        b = built(tokens=other, types=types, mask=mask)["hidden"]
        unmasked = built(tokens=other, types=types, mask=torch.zeros_like(mask))["hidden"]
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, :4], unmasked[:, :4], atol=1e-4)  # without the mask, padding is seen
