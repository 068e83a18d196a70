"""ViT-B/16, GPT-2 small (tied head) and a Llama-2-7B-shaped stack, written plainly in the spec
language and by hand in PyTorch (``tests/torch_modules.py``), must agree exactly.

At full size on the meta device: parameter counts (the published ones), ``print(model)``, every
row's output shape (forward hooks on a meta forward pass) and forward FLOPs (``FlopCounterMode``
on the hand-written model). Scaled down on real tensors: the model built from the spec takes the
hand-written model's weights (strictly) and computes the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch_modules import (
    CausalSelfAttention,
    ClassToken,
    PositionalEmbedding,
    Residual,
    Select,
    SwiGLU,
    TransformerEncoderLayer,
    Transpose,
    count_params,
    flop_count,
    output_shapes,
)

from app.examples import GPT2_SMALL as GPT2_SMALL_EXAMPLE
from app.examples import TINY_LLAMA
from app.examples import VIT_B_16 as VIT_B_16_EXAMPLE
from layers import ModelSpec
from layers.analysis.trace import trace_model

URL = "/v1/models/summary"


def vit_spec(image: int, patch: int, d: int, heads: int, ff: int, n: int, classes: int) -> dict:
    """torchvision's vision_transformer.py, layer by layer (dropout 0, LayerNorm eps 1e-6 as there)."""
    block = {
        "type": "TransformerEncoderLayer",
        "nhead": heads,
        "dim_feedforward": ff,
        "dropout": 0.0,
        "activation": "gelu",
        "layer_norm_eps": 1e-6,
        "norm_first": True,
    }
    return {
        "layers": [
            {"type": "Conv2d", "out_channels": d, "kernel_size": patch, "stride": patch},
            {"type": "Flatten", "start_dim": 2},
            {"type": "Transpose", "dim0": 1, "dim1": 2},
            {"type": "ClassToken"},
            {"type": "PositionalEmbedding", "num_positions": (image // patch) ** 2 + 1},
            {"type": "Repeat", "times": n, "layers": [block]},
            {"type": "LayerNorm", "eps": 1e-6},
            {"type": "Select", "dim": 1, "index": 0},
            {"type": "Linear", "out_features": classes},
        ]
    }


def vit_torch(image: int, patch: int, d: int, heads: int, ff: int, n: int, classes: int) -> nn.Sequential:
    def block() -> nn.Module:
        return TransformerEncoderLayer(d, heads, ff, 0.0, "gelu", 1e-6, batch_first=True, norm_first=True)

    return nn.Sequential(
        nn.Conv2d(3, d, patch, stride=patch),
        nn.Flatten(start_dim=2),
        Transpose(1, 2),
        ClassToken(d),
        PositionalEmbedding((image // patch) ** 2 + 1, d),
        nn.Sequential(*[nn.Sequential(block()) for _ in range(n)]),
        nn.LayerNorm(d, eps=1e-6),
        Select(1, 0),
        nn.Linear(d, classes),
    )


def gpt2_spec(vocab: int, context: int, d: int, heads: int, n: int, tied: bool = True) -> dict:
    """GPT-2: token and learned position embeddings, pre-norm causal blocks (GELU tanh), a tied head."""
    block = {
        "type": "TransformerEncoderLayer",
        "nhead": heads,
        "dim_feedforward": 4 * d,
        "dropout": 0.0,
        "activation": "gelu_tanh",
        "norm_first": True,
        "causal": True,
    }
    head = {"type": "Linear", "out_features": vocab, "bias": False} | ({"tie_weight": "wte"} if tied else {})
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": vocab, "embedding_dim": d, "name": "wte"},
            {"type": "PositionalEmbedding", "num_positions": context},
            {"type": "Repeat", "times": n, "layers": [block]},
            {"type": "LayerNorm"},
            head,
        ]
    }


def gpt2_torch(vocab: int, context: int, d: int, heads: int, n: int) -> nn.Sequential:
    def block() -> nn.Module:
        gelu = nn.GELU(approximate="tanh")
        return TransformerEncoderLayer(
            d, heads, 4 * d, 0.0, gelu, batch_first=True, norm_first=True, causal=True
        )

    wte, head = nn.Embedding(vocab, d), nn.Linear(d, vocab, bias=False)
    head.weight = wte.weight  # nanoGPT's tie: one tensor
    return nn.Sequential(
        wte,
        PositionalEmbedding(context, d),
        nn.Sequential(*[nn.Sequential(block()) for _ in range(n)]),
        nn.LayerNorm(d),
        head,
    )


def llama_spec(vocab: int, d: int, heads: int, ff: int, n: int, kv_heads: int | None = None) -> dict:
    """Llama: pre-norm residual blocks of RMSNorm + causal self-attention with RoPE, RMSNorm + SwiGLU."""
    attention = {"type": "CausalSelfAttention", "num_heads": heads, "num_kv_heads": kv_heads, "rope": True}
    block = [
        {"type": "Residual", "layers": [{"type": "RMSNorm", "eps": 1e-5}, attention]},
        {
            "type": "Residual",
            "layers": [{"type": "RMSNorm", "eps": 1e-5}, {"type": "SwiGLU", "hidden_features": ff}],
        },
    ]
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": vocab, "embedding_dim": d},
            {"type": "Repeat", "times": n, "layers": block},
            {"type": "RMSNorm", "eps": 1e-5},
            {"type": "Linear", "out_features": vocab, "bias": False},
        ]
    }


def llama_torch(
    vocab: int, d: int, heads: int, ff: int, n: int, kv_heads: int | None = None
) -> nn.Sequential:
    def block() -> nn.Sequential:
        return nn.Sequential(
            Residual(nn.Sequential(nn.RMSNorm(d, eps=1e-5), CausalSelfAttention(d, heads, kv_heads))),
            Residual(nn.Sequential(nn.RMSNorm(d, eps=1e-5), SwiGLU(d, ff))),
        )

    return nn.Sequential(
        nn.Embedding(vocab, d),
        nn.Sequential(*[block() for _ in range(n)]),
        nn.RMSNorm(d, eps=1e-5),
        nn.Linear(d, vocab, bias=False),
    )


def qwen2_spec(vocab: int, d: int, heads: int, kv_heads: int, ff: int, n: int) -> dict:
    """Qwen2: Llama's blocks with biases on q, k and v but not o, RMSNorm eps 1e-6, RoPE base 1e6,
    and the head tied to the token embedding (tie_word_embeddings)."""
    attention = {
        "type": "CausalSelfAttention",
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "rope_theta": 1e6,
        "qkv_bias": True,
    }
    norm = {"type": "RMSNorm", "eps": 1e-6}
    block = [
        {"type": "Residual", "layers": [norm, attention]},
        {"type": "Residual", "layers": [norm, {"type": "SwiGLU", "hidden_features": ff}]},
    ]
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": vocab, "embedding_dim": d, "name": "embed_tokens"},
            {"type": "Repeat", "times": n, "layers": block},
            norm,
            {"type": "Linear", "out_features": vocab, "bias": False, "tie_weight": "embed_tokens"},
        ]
    }


def qwen2_torch(vocab: int, d: int, heads: int, kv_heads: int, ff: int, n: int) -> nn.Sequential:
    def block() -> nn.Sequential:
        attention = CausalSelfAttention(
            d, heads, kv_heads, rope_theta=1e6, qkv_bias=(True, True, True), out_bias=False
        )
        return nn.Sequential(
            Residual(nn.Sequential(nn.RMSNorm(d, eps=1e-6), attention)),
            Residual(nn.Sequential(nn.RMSNorm(d, eps=1e-6), SwiGLU(d, ff))),
        )

    embed, head = nn.Embedding(vocab, d), nn.Linear(d, vocab, bias=False)
    head.weight = embed.weight
    return nn.Sequential(embed, nn.Sequential(*[block() for _ in range(n)]), nn.RMSNorm(d, eps=1e-6), head)


@dataclass
class Reference:
    spec: dict
    torch_model: Callable[[], nn.Module]
    input_shape: list[int]
    input_dtype: str = "float32"
    params: int | None = None  # the published count, where there is one


VIT_B_16 = (224, 16, 768, 12, 3072, 12, 1000)
GPT2_SMALL = (50257, 1024, 768, 12, 12)
LLAMA_2_7B = (32000, 4096, 32, 11008, 32)
QWEN2_0_5B = (151936, 896, 14, 2, 4864, 24)  # Qwen/Qwen2-0.5B's config.json
FULL_SIZE = {
    # torchvision.models.vit_b_16: 86,567,656 parameters
    "vit_b_16": Reference(
        vit_spec(*VIT_B_16), lambda: vit_torch(*VIT_B_16), [1, 3, 224, 224], params=86_567_656
    ),
    # GPT-2 small (124M): the head shares the token embedding's weight
    "gpt2_small": Reference(
        gpt2_spec(*GPT2_SMALL), lambda: gpt2_torch(*GPT2_SMALL), [1, 1024], "int64", params=124_439_808
    ),
    # Llama-2-7B: 6,738,415,616 parameters
    "llama_7b": Reference(
        llama_spec(*LLAMA_2_7B), lambda: llama_torch(*LLAMA_2_7B), [1, 2048], "int64", params=6_738_415_616
    ),
    # Qwen2-0.5B: 494,032,768 parameters (q, k and v biased, o not; the head tied)
    "qwen2_0_5b": Reference(
        qwen2_spec(*QWEN2_0_5B), lambda: qwen2_torch(*QWEN2_0_5B), [1, 1024], "int64", params=494_032_768
    ),
}
SMALL = {
    "vit": Reference(
        vit_spec(32, 8, 24, 3, 48, 2, 10), lambda: vit_torch(32, 8, 24, 3, 48, 2, 10), [2, 3, 32, 32]
    ),
    "gpt2": Reference(gpt2_spec(50, 16, 24, 3, 2), lambda: gpt2_torch(50, 16, 24, 3, 2), [2, 12], "int64"),
    "llama_gqa": Reference(
        llama_spec(50, 32, 4, 40, 2, kv_heads=2),
        lambda: llama_torch(50, 32, 4, 40, 2, kv_heads=2),
        [2, 12],
        "int64",
    ),
    "qwen2": Reference(
        qwen2_spec(50, 32, 4, 2, 40, 2), lambda: qwen2_torch(50, 32, 4, 2, 40, 2), [2, 12], "int64"
    ),
}


def meta_input(ref: Reference) -> torch.Tensor:
    return torch.empty(ref.input_shape, dtype=getattr(torch, ref.input_dtype), device="meta")


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_model_equals_the_hand_written_one(client, name: str) -> None:
    ref = FULL_SIZE[name]
    body = {"model": ref.spec, "input_shape": ref.input_shape, "input_dtype": ref.input_dtype}
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    summary = response.json()
    with torch.device("meta"):
        model = ref.torch_model()
    x = meta_input(ref)

    assert summary["total_params"] == count_params(model)[0] == ref.params
    assert summary["param_bytes"] == 4 * ref.params
    assert summary["model_repr"] == str(model)
    shapes, out = output_shapes(model, x)
    assert summary["output_shape"] == out
    for layer in summary["layers"]:
        assert layer["output_shape"] == shapes[layer["path"]], layer["path"]
    assert summary["flops"] == flop_count(model, x)


def test_gpt2_small_head_is_counted_once_where_the_embedding_is(client) -> None:
    """Untied, GPT-2 small would be the issue's 163,037,184; tied, the head lists the weight as the
    embedding's and counts nothing of its own."""
    bodies = [
        {"model": gpt2_spec(*GPT2_SMALL, tied=t), "input_shape": [1, 8], "input_dtype": "int64"}
        for t in (1, 0)
    ]
    tied, untied = (client.post(URL, json=body).json() for body in bodies)
    assert (tied["total_params"], untied["total_params"]) == (124_439_808, 163_037_184)
    head = tied["layers"][-1]
    assert head["params"] == [
        {"name": "weight", "shape": [50257, 768], "numel": 50257 * 768, "trainable": True, "tied_to": "0"}
    ]
    assert head["num_params"] == 0
    assert tied["layers"][0]["num_params"] == 50257 * 768
    top = [layer["num_params"] for layer in tied["layers"] if layer["depth"] == 0]
    assert sum(top) == tied["total_params"]


def test_repeat_rows_carry_their_copy(client) -> None:
    ref = FULL_SIZE["llama_7b"]
    body = {"model": ref.spec, "input_shape": [1, 16], "input_dtype": "int64"}
    layers = client.post(URL, json=body).json()["layers"]
    repeat = layers[1]
    assert (repeat["path"], repeat["type"], repeat["repeat"]) == ("1", "Repeat", None)
    copies = [layer for layer in layers if layer["repeat"] is not None]
    assert len(copies) == 32 * 6  # 2 residuals, each with a norm and a body
    assert [c["repeat"] for c in copies if c["depth"] == 1] == [
        {"index": i, "times": 32} for i in range(32) for _ in range(2)
    ]
    assert {c["path"] for c in copies if c["depth"] == 1} == {f"1.{i}.{j}" for i in range(32) for j in (0, 1)}
    per_copy = sum(c["num_params"] for c in copies if c["depth"] == 1) // 32
    assert repeat["num_params"] == 32 * per_copy == 32 * 202_383_360


def test_qwen2_biases_written_with_the_shorthand(client) -> None:
    """bias sets all four projections unless qkv_bias or out_bias is given: true alone biases o too
    (the issue's 494,054,272), true with out_bias false is Qwen2."""

    def total(**biases: object) -> int:
        spec = qwen2_spec(*QWEN2_0_5B)
        attention = spec["layers"][1]["layers"][0]["layers"][1]
        attention.pop("qkv_bias")
        attention.update(biases)
        body = {"model": spec, "input_shape": [1, 8], "input_dtype": "int64"}
        return client.post(URL, json=body).json()["total_params"]

    assert total(bias=True) == 494_054_272
    assert total(bias=True, out_bias=False) == total(qkv_bias=[True, True, True]) == 494_032_768
    assert total() == 494_032_768 - 24 * (896 + 2 * 128)  # no bias at all: Llama's


@pytest.mark.parametrize("name", list(SMALL))
def test_small_model_computes_what_the_hand_written_one_does(name: str) -> None:
    ref = SMALL[name]
    traced = trace_model(ModelSpec.model_validate(ref.spec), tuple(ref.input_shape), ref.input_dtype)
    torch.manual_seed(0)
    ours, theirs = traced.spec.build(), ref.torch_model()
    assert str(ours) == str(theirs)
    assert count_params(ours) == count_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    integer = ref.input_dtype == "int64"
    x = torch.randint(0, 50, ref.input_shape) if integer else torch.randn(ref.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
    assert traced.flops == flop_count(ref.torch_model().to("meta"), x.to("meta"))


def test_the_examples_are_these_references(client) -> None:
    """Swagger's examples and the playground's presets (app/examples.py) are the models tested here."""
    assert vit_spec(*VIT_B_16) == VIT_B_16_EXAMPLE
    assert gpt2_spec(*GPT2_SMALL) == GPT2_SMALL_EXAMPLE
    assert llama_spec(32000, 2048, 32, 5632, 22, kv_heads=4) == TINY_LLAMA
    body = {"model": TINY_LLAMA, "input_shape": [1, 16], "input_dtype": "int64"}
    summary = client.post(URL, json=body).json()
    with torch.device("meta"):
        reference = llama_torch(32000, 2048, 32, 5632, 22, kv_heads=4)
    assert summary["total_params"] == count_params(reference)[0] == 1_100_048_384  # TinyLlama-1.1B
