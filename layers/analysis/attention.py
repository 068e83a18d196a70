"""Attention on meta as the target device runs it.

On meta torch takes the math path of ``scaled_dot_product_attention``, which keeps the whole
attention matrix for backward; a CPU or GPU runs a fused kernel where it can, which keeps only
the output and a log-sum-exp. The CPU's choice is asked of torch itself
(``torch._fused_sdp_choice`` on tiny real tensors of the same dtype, heads, mask, dropout and
causality); on CUDA, flash attention for half precision without a mask, else memory-efficient
attention.

The call is caught in the dispatcher (a Python kernel for the op's meta autograd key), so calls
made inside torch are seen too: ``nn.MultiheadAttention`` reaches it through
``F.multi_head_attention_forward``, where a function mode is not active. The Python dispatcher
slows every operator and runs torch's Python kernels of some (dropout, matmul), which keep other
tensors than a real run: it is on only while an attention module runs forward (whose other
operators have none: projections, reshapes, masks), and off again inside the attention.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch._C import DispatchKey
from torch._dispatch.python import enable_python_dispatcher, no_python_dispatcher

from layers.catalog.causal_attention import CausalSelfAttention

Device = Literal["cuda", "cpu"]
SDP_FLASH = 1  # torch._fused_sdp_choice's answer for flash attention (0 is the math path)
# The modules whose forward calls scaled_dot_product_attention (transformer layers hold an MHA).
ATTENTION_MODULES = (nn.MultiheadAttention, CausalSelfAttention)

_SDPA = torch.ops.aten.scaled_dot_product_attention.default
_target = threading.local()  # .device: the target device while an attention module runs, else None


@_SDPA.py_impl(DispatchKey.AutogradMeta)
def _meta_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
    device: Device | None = getattr(_target, "device", None)
    if device is None:  # someone else's Python dispatcher: what torch does without this kernel
        return _SDPA.decompose(*args, **kwargs)
    # Torch's own Python kernels (dropout's, matmul's) save other tensors than the C++ ones a
    # real run uses: the attention itself runs without the Python dispatcher.
    with no_python_dispatcher():
        return _fused_attention(device, *args, **kwargs)


@contextmanager
def device_attention(module: nn.Module, device: Device) -> Iterator[None]:
    """Within it, the attention modules in ``module`` run on meta as ``device`` would run them."""
    stack = ExitStack()
    depth = 0

    def enter(mod: nn.Module, args: Any) -> None:
        nonlocal depth
        if depth == 0:
            stack.enter_context(enable_python_dispatcher())
            _target.device = device
        depth += 1

    def leave(mod: nn.Module, args: Any, out: Any) -> None:
        nonlocal depth
        depth -= 1
        if depth == 0:
            _target.device = None
            stack.close()

    handles = []
    for sub in module.modules():
        if isinstance(sub, ATTENTION_MODULES):
            handles.append(sub.register_forward_pre_hook(enter))
            handles.append(sub.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        _target.device = None
        stack.close()
        for h in handles:
            h.remove()


def _fused_attention(
    device: Device,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    args = (query, key, value, attn_mask, dropout_p, is_causal)
    if device == "cpu":
        if _cpu_choice(*args, scale, enable_gqa) != SDP_FLASH:
            return _SDPA.decompose(*args, scale=scale, enable_gqa=enable_gqa)
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # takes fewer k/v heads
        return flash(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
    key, value = _repeat_kv(query, key, value, enable_gqa)
    if query.dtype in (torch.float16, torch.bfloat16) and attn_mask is None:
        flash = torch.ops.aten._scaled_dot_product_flash_attention
        return flash(query, key, value, dropout_p, is_causal, scale=scale)[0]
    efficient = torch.ops.aten._scaled_dot_product_efficient_attention
    return efficient(query, key, value, attn_mask, True, dropout_p, is_causal, scale=scale)[0]


def _repeat_kv(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gqa: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if not gqa or key.shape[-3] == query.shape[-3]:
        return key, value
    repeats = query.shape[-3] // key.shape[-3]
    return key.repeat_interleave(repeats, -3), value.repeat_interleave(repeats, -3)


def _cpu_choice(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    gqa: bool,
) -> int:
    def tiny(t: torch.Tensor) -> torch.Tensor:
        shape = [1] * (t.dim() - 3) + [t.shape[-3], 2, t.shape[-1]]
        return torch.zeros(shape, dtype=t.dtype)

    small_mask = None if mask is None else torch.zeros([1] * (mask.dim() - 2) + [2, 2], dtype=mask.dtype)
    return torch._fused_sdp_choice(
        tiny(query), tiny(key), tiny(value), small_mask, dropout_p, is_causal, scale=scale, enable_gqa=gqa
    )
