"""Causal attention on real tensors, and FLOPs against hand-written torch.

Causality: changing token t never changes an output before t (and, so the test can fail, the
same layer without its mask does change them). Rotary attention equals a reference written
independently (RoPE as a complex rotation, explicit scores, repeated key/value heads).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_modules import CausalSelfAttention, Residual, SwiGLU, flop_count

from layers import ModelSpec
from layers.analysis.trace import trace_model

CAUSAL_LAYERS = {
    "encoder_post_norm": {
        "type": "TransformerEncoderLayer",
        "nhead": 4,
        "dim_feedforward": 32,
        "dropout": 0.0,
        "causal": True,
    },
    "encoder_pre_norm_gelu_tanh": {
        "type": "TransformerEncoderLayer",
        "nhead": 2,
        "dim_feedforward": 32,
        "dropout": 0.0,
        "norm_first": True,
        "activation": "gelu_tanh",
        "causal": True,
    },
    "multihead_attention": {"type": "MultiheadAttention", "num_heads": 4, "causal": True},
    "llama_attention_gqa_rope": {"type": "CausalSelfAttention", "num_heads": 4, "num_kv_heads": 2},
    "llama_attention_mqa_no_rope": {
        "type": "CausalSelfAttention",
        "num_heads": 4,
        "num_kv_heads": 1,
        "rope": False,
    },
}
SHAPE = (2, 7, 16)


def build(layer: dict, shape: tuple[int, ...] = SHAPE) -> nn.Module:
    torch.manual_seed(0)
    return trace_model(ModelSpec(layers=[layer]), shape).spec.build()


def earlier_outputs_change(model: nn.Module, x: torch.Tensor, t: int) -> tuple[bool, bool]:
    """Perturb token t: (did any output before t change, did the output at t change)."""
    changed = x.clone()
    changed[:, t] += torch.randn_like(changed[:, t])
    y, y_changed = model(x), model(changed)
    return not torch.equal(y[:, :t], y_changed[:, :t]), not torch.allclose(y[:, t], y_changed[:, t])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(CAUSAL_LAYERS))
def test_changing_token_t_never_changes_outputs_before_t(name: str, mode: str) -> None:
    model = build(CAUSAL_LAYERS[name]).train(mode == "train")
    x = torch.randn(SHAPE)
    with torch.no_grad():
        for t in range(SHAPE[1]):
            before, at = earlier_outputs_change(model, x, t)
            assert not before, f"{name}: changing token {t} changed an earlier output"
            assert at, f"{name}: changing token {t} did not change its own output"


@pytest.mark.parametrize("name", ["encoder_post_norm", "multihead_attention"])
def test_without_causal_earlier_outputs_do_change(name: str) -> None:
    """The control: the same layer unmasked sees later tokens, which the test above would catch."""
    unmasked = {key: value for key, value in CAUSAL_LAYERS[name].items() if key != "causal"}
    model = build(unmasked).eval()
    with torch.no_grad():
        assert earlier_outputs_change(model, torch.randn(SHAPE), SHAPE[1] - 1)[0]


def test_rotary_gqa_attention_equals_the_reference() -> None:
    """A longer sequence and a large base exercise every rotary frequency; the reference is
    written independently (tests/torch_modules.py), loaded with the same weights."""
    layer = {"type": "CausalSelfAttention", "num_heads": 8, "num_kv_heads": 2, "rope_theta": 500000.0}
    shape = (2, 33, 64)
    ours = build(layer, shape).eval()
    reference = nn.Sequential(CausalSelfAttention(64, 8, 2, rope_theta=500000.0)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(shape, dtype=torch.float64)
    ours.double(), reference.double()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
        # the positions matter: the same weights without rotation compute something else
        unrotated = build({**layer, "rope": False}, shape).double().eval()
        unrotated.load_state_dict(reference.state_dict())
        assert not torch.allclose(unrotated(x), reference(x))


def llama_block_spec(width: int, heads: int, kv_heads: int, hidden: int) -> list[dict]:
    return [
        {
            "type": "Residual",
            "layers": [
                {"type": "RMSNorm"},
                {"type": "CausalSelfAttention", "num_heads": heads, "num_kv_heads": kv_heads},
            ],
        },
        {"type": "Residual", "layers": [{"type": "RMSNorm"}, {"type": "SwiGLU", "hidden_features": hidden}]},
    ]


def test_llama_block_flops_equal_flop_counter_on_hand_written_torch(client) -> None:
    batch, steps, width, heads, kv_heads, hidden = 2, 16, 64, 8, 2, 172
    body = {
        "model": {"layers": llama_block_spec(width, heads, kv_heads, hidden)},
        "input_shape": [batch, steps, width],
    }
    summary = client.post("/v1/models/summary", json=body).json()

    with torch.device("meta"):
        reference = nn.Sequential(
            Residual(nn.Sequential(nn.RMSNorm(width), CausalSelfAttention(width, heads, kv_heads))),
            Residual(nn.Sequential(nn.RMSNorm(width), SwiGLU(width, hidden))),
        )
    assert summary["flops"] == flop_count(reference, torch.empty(batch, steps, width, device="meta"))

    # and by hand: every projection, both attention matmuls (the full T x T, as sdpa is counted)
    head_dim, kv_width = width // heads, kv_heads * (width // heads)
    projections = 2 * batch * steps * width * (width + 2 * kv_width + width)
    attention = 2 * 2 * batch * heads * steps * steps * head_dim
    feedforward = 2 * batch * steps * 3 * width * hidden
    assert summary["flops"] == projections + attention + feedforward
    assert summary["total_params"] == 2 * width + width * (2 * width + 2 * kv_width) + 3 * width * hidden


class WhisperAttention(nn.Module):
    """openai/whisper's MultiHeadAttention (whisper/model.py) as the decoder's masked self-attention:
    no bias on the key; q and k each scaled by head_dim^-0.25."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch, n_ctx, n_state = x.shape
        scale = (n_state // self.n_head) ** -0.25
        q = self.query(x).view(n_batch, n_ctx, self.n_head, -1).permute(0, 2, 1, 3) * scale
        k = self.key(x).view(n_batch, n_ctx, self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(n_batch, n_ctx, self.n_head, -1).permute(0, 2, 1, 3)
        mask = torch.empty(n_ctx, n_ctx, dtype=x.dtype).fill_(-float("inf")).triu_(1)
        w = (q @ k + mask).softmax(dim=-1)
        return self.out((w @ v).permute(0, 2, 1, 3).flatten(start_dim=2))


WHISPER_ATTENTION = {  # every projection biased but the key
    "type": "CausalSelfAttention",
    "num_heads": 6,
    "rope": False,
    "bias": True,
    "qkv_bias": [True, False, True],
}


def test_whisper_attention_has_no_key_bias(client) -> None:
    """Whisper-tiny (width 384, 6 heads): 590,976 parameters per attention, as openai's; with one
    bias for all four projections it had 384 more in each (1,536 over the encoder's 4 layers)."""
    body = {"model": {"layers": [WHISPER_ATTENTION]}, "input_shape": [1, 8, 384]}
    summary = client.post("/v1/models/summary", json=body).json()
    with torch.device("meta"):
        reference = WhisperAttention(384, 6)
    assert summary["total_params"] == sum(p.numel() for p in reference.parameters()) == 590_976
    names = [p["name"] for p in summary["layers"][0]["params"]]
    no_key_bias = ["q_proj.weight", "q_proj.bias", "k_proj.weight", "v_proj.weight", "v_proj.bias"]
    assert names == [*no_key_bias, "o_proj.weight", "o_proj.bias"]
    one_bias = {key: value for key, value in WHISPER_ATTENTION.items() if key != "qkv_bias"}
    body["model"]["layers"] = [one_bias]
    assert client.post("/v1/models/summary", json=body).json()["total_params"] == 590_976 + 384


def test_whisper_attention_computes_what_openais_does() -> None:
    ours = build(WHISPER_ATTENTION, (2, 9, 48)).double().eval()
    torch.manual_seed(0)
    theirs = WhisperAttention(48, 6).double().eval()
    with torch.no_grad():
        for (name, mine), other in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            assert mine.shape == other.shape, name
            mine.copy_(other)
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
