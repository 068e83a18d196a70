"""The parameters of a traced model: each layer's own, and counts with a shared tensor counted once."""

from __future__ import annotations

from dataclasses import dataclass

from layers.analysis.trace import TracedLayer, TracedModel


@dataclass(frozen=True)
class Param:
    name: str  # relative to the layer, e.g. "linear.weight"
    shape: list[int]
    numel: int
    trainable: bool
    tied_to: str | None  # module path of the layer whose weight this is (``tie_weight``); counted there


@dataclass(frozen=True)
class Params:
    total: int  # unique parameters (shared ones counted once)
    trainable: int
    param_bytes: int
    buffer_bytes: int
    own: dict[str, list[Param]]  # by layer path: the layer's own (a container's are its children's)
    counts: dict[str, int]  # by layer path: parameters under it, children included, tied ones at the owner


def count_params(traced: TracedModel) -> Params:
    module = traced.module
    params = list(module.parameters())  # each tensor once, a tied one included
    own = {node.path: _own_params(node) for node in traced.layers}
    counts: dict[str, int] = {}
    for node in reversed(traced.layers):  # pre-order reversed: children before their parent
        mine = sum(p.numel for p in own[node.path] if p.tied_to is None)
        counts[node.path] = mine + sum(counts[child.path] for child in node.children)
    return Params(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in module.buffers()),
        own=own,
        counts=counts,
    )


def weight_bytes(traced: TracedModel) -> int:
    """Bytes of the model's parameters (shared ones once) and buffers: what its weights file holds."""
    tensors = [*traced.module.parameters(), *traced.module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _own_params(node: TracedLayer) -> list[Param]:
    # A container's parameters belong to its children's entries; a leaf reports all of its own.
    assert node.module is not None
    return [
        Param(name, list(p.shape), p.numel(), p.requires_grad, node.tied.get(name))
        for name, p in node.module.named_parameters(recurse=not node.children)
    ]
