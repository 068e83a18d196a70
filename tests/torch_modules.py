"""Hand-written PyTorch references for the tests: what a PyTorch user would write by hand.

Written from ``torch.nn`` alone (nothing here imports ``layers``), so a test that compares a
summary with these modules compares the service with PyTorch, not with itself. Class and
attribute names follow the issue's contract (``MyLinear.linear``, ``Residual.layers``/``shortcut``)
so ``print(model)`` and parameter names can be compared exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class MyLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MyConv2d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, **kw
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(nn.Module):
    """Conv2d (no bias under batch norm) -> BatchNorm2d or Identity -> activation."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1, bn: bool = True, act=nn.ReLU
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, layers: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.shortcut(x)


class Concat(nn.Module):
    def __init__(self, branches: list[nn.Module], dim: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Multiply(nn.Module):
    """Squeeze-excitation's gate: the product of the branches' outputs (an empty branch is x)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out * branch(x)
        return out


class Bilinear(nn.Bilinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, x)


def later_positions(x: torch.Tensor) -> torch.Tensor:
    """[T, T] boolean mask, True where position j > i (what a causal decoder must not see)."""
    steps = x.shape[1]
    return torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)


def with_later_positions(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The causal mask, also hiding what a given boolean ``mask`` hides."""
    return later_positions(x) if mask is None else later_positions(x) | mask


class SelfAttention(nn.MultiheadAttention):
    """Attention of the input to ``key`` and ``value`` (the input, when not given), with torch's
    masks; with ``causal``, a boolean mask over later positions too."""

    def __init__(self, *args, causal: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x, key=None, value=None, key_padding_mask=None, attn_mask=None) -> torch.Tensor:
        key = x if key is None else key
        value = key if value is None else value
        mask = with_later_positions(x, attn_mask) if self.causal else attn_mask
        return super().forward(x, key, value, key_padding_mask, need_weights=False, attn_mask=mask)[0]

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (batch_first) with a boolean causal src_mask when ``causal``."""

    def __init__(self, *args, causal: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor, src_mask=None, src_key_padding_mask=None) -> torch.Tensor:
        mask = with_later_positions(x, src_mask) if self.causal else src_mask
        return super().forward(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask)

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


class TransformerDecoderLayer(nn.TransformerDecoderLayer):
    """``nn.TransformerDecoderLayer`` (batch_first) with a boolean causal tgt_mask when ``causal``."""

    def __init__(self, *args, causal: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask=None, **masks) -> torch.Tensor:
        mask = with_later_positions(x, tgt_mask) if self.causal else tgt_mask
        return super().forward(x, memory, mask, **masks)

    def extra_repr(self) -> str:
        return "causal=True" if self.causal else ""


class _SequenceOut:
    """A recurrent module that returns its output sequence (or last step) instead of a tuple; with
    ``state``, the output sequence and the final state as one flat tuple."""

    last = False
    state = False

    def forward(self, x: torch.Tensor, h0=None, c0=None):
        out, state = super().forward(x, None if h0 is None else h0 if c0 is None else (h0, c0))
        if self.state:
            return (out, *state) if isinstance(state, tuple) else (out, state)
        return out[:, -1] if self.last else out

    def extra_repr(self) -> str:
        output = ", output=last" if self.last else ", output=sequence_and_state" if self.state else ""
        return super().extra_repr() + output


class RNN(_SequenceOut, nn.RNN):
    pass


class LSTM(_SequenceOut, nn.LSTM):
    pass


class GRU(_SequenceOut, nn.GRU):
    pass


def last_step(module: _SequenceOut) -> _SequenceOut:
    module.last = True
    return module


def with_state(module: _SequenceOut) -> _SequenceOut:
    module.state = True
    return module


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable), each tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def output_shapes(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, list[int]], list[int]]:
    """Run ``model`` on ``x`` with a forward hook on every submodule: {module path: output shape}."""
    shapes: dict[str, list[int]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, list(output.shape))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes, list(out.shape)


def flop_count(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


# -- tensor plumbing and positions (issue 9), written independently of layers/ -------------------


class Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int) -> None:
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.transpose(x, self.dim0, self.dim1)

    def extra_repr(self) -> str:
        return f"dim0={self.dim0}, dim1={self.dim1}"


class Select(nn.Module):
    def __init__(self, dim: int, index: int) -> None:
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.unbind(x, self.dim)[self.index]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, index={self.index}"


class Slice(nn.Module):
    def __init__(self, dim: int, start: int | None = None, end: int | None = None, step: int = 1) -> None:
        super().__init__()
        self.dim, self.start, self.end, self.step = dim, start, end, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = list(range(x.shape[self.dim]))[self.start : self.end : self.step]
        return torch.index_select(x, self.dim, torch.tensor(kept))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, start={self.start}, end={self.end}, step={self.step}"


class Mean(nn.Module):
    def __init__(self, dim: int | tuple[int, ...], keepdim: bool = False) -> None:
        super().__init__()
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=self.dim, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, keepdim={self.keepdim}"


class ClassToken(nn.Module):
    """torchvision's ViT: ``x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)``."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.token.shape[-1]}"


class PositionalEmbedding(nn.Module):
    def __init__(self, num_positions: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_positions, embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1])
        return x + nn.functional.embedding(positions, self.weight)

    def extra_repr(self) -> str:
        return f"num_positions={self.weight.shape[0]}, embedding_dim={self.weight.shape[1]}"


class SinusoidalPositionalEncoding(nn.Module):
    """pe[t, 2i] = sin(t / 10000^(2i / d)), pe[t, 2i + 1] = cos(t / 10000^(2i / d)), element by element."""

    def __init__(self, max_len: int, embedding_dim: int) -> None:
        super().__init__()
        pe = torch.tensor(
            [
                [
                    (math.sin if j % 2 == 0 else math.cos)(t / 10000 ** ((j - j % 2) / embedding_dim))
                    for j in range(embedding_dim)
                ]
                for t in range(max_len)
            ]
        )
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]

    def extra_repr(self) -> str:
        return f"max_len={self.pe.shape[0]}, embedding_dim={self.pe.shape[1]}"


def rope_complex(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as complex rotation: (x_i + j x_{i + d/2}) * exp(j t theta^(-2i/d)), x is (B, H, T, d)."""
    steps, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    freqs = torch.tensor([theta ** (-2 * i / dim) for i in range(half)], device=x.device)
    angle = torch.arange(steps, device=x.device, dtype=torch.float32)[:, None] * freqs[None, :]  # (T, d/2)
    z = torch.complex(x[..., :half].float(), x[..., half:].float()) * torch.polar(
        torch.ones_like(angle), angle
    )
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Llama's attention written out: explicit scores, a -inf mask over later positions, key/value
    heads repeated for grouped-query attention, RoPE as a complex rotation."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        rope: bool = True,
        rope_theta: float = 10000.0,
        bias: bool = False,
        dropout: float = 0.0,
        qkv_bias: tuple[bool, bool, bool] | None = None,  # (q, k, v); default: bias
        out_bias: bool | None = None,  # default: bias
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads or num_heads
        self.head_dim = embed_dim // num_heads
        self.rope, self.rope_theta, self.dropout = rope, rope_theta, dropout
        q_bias, k_bias, v_bias = qkv_bias or (bias, bias, bias)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=q_bias)
        self.k_proj = nn.Linear(embed_dim, self.num_kv_heads * self.head_dim, bias=k_bias)
        self.v_proj = nn.Linear(embed_dim, self.num_kv_heads * self.head_dim, bias=v_bias)
        self.o_proj = nn.Linear(embed_dim, embed_dim, bias=bias if out_bias is None else out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = rope_complex(q, self.rope_theta), rope_complex(k, self.rope_theta)
        group = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(later_positions(x), float("-inf"))
        weights = nn.functional.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        return self.o_proj((weights @ v).transpose(1, 2).reshape(b, t, e))

    def extra_repr(self) -> str:
        rope = f"rope=True, rope_theta={self.rope_theta}" if self.rope else "rope=False"
        return f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, {rope}, dropout={self.dropout}"


class SwiGLU(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, bias: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.w3 = nn.Linear(in_features, hidden_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.w1(x)
        return self.w2(gate * torch.sigmoid(gate) * self.w3(x))


# -- issue 18's smaller gaps: what torchvision and timm write ------------------------------------


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, as torchvision writes it (torchvision is not installed)."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival_rate = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival_rate)
        if survival_rate > 0.0:
            noise.div_(survival_rate)
        return x * noise

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode})"


class LayerScale(nn.Module):
    """timm's LayerScale: x * gamma, gamma of shape [dim]."""

    def __init__(self, dim: int, init_values: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"dim={self.gamma.numel()}"
