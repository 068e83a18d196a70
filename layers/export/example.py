"""The example input an exported model runs on: random numbers, or token ids every Embedding takes."""

from __future__ import annotations

import torch

from layers.analysis.trace import TracedModel
from layers.language.graph import GraphSpec
from layers.language.model import ModelSpec


def vocabulary(spec: ModelSpec | GraphSpec) -> int:
    """The smallest ``num_embeddings`` in the model (2 without one): ids below it fit every Embedding."""
    sizes = [getattr(layer, "num_embeddings", None) for _, _, layer in spec.walk()]
    return min((n for n in sizes if isinstance(n, int)), default=2)


def example_shape(traced: TracedModel) -> list[int]:
    """The traced input shape with a batch of 2 (torch.export specialises a batch of 1)."""
    shape = list(traced.input_shape)
    if len(shape) > 1:
        shape[0] = 2
    return shape


def example_inputs(traced: TracedModel) -> dict[str, torch.Tensor]:
    """The model's example inputs by name (``example_input`` for a sequence): each graph input at
    batch 2, random numbers or token ids, and masks all False (nothing padded)."""
    if traced.graph is None:
        return {"input": example_input(traced)}
    generator = torch.Generator().manual_seed(0)
    vocab = vocabulary(traced.spec)
    examples = {}
    for name, t in traced.graph.inputs.items():
        shape = [2, *t.shape[1:]] if t.dim() > 1 else list(t.shape)
        if t.dtype.is_floating_point:
            examples[name] = torch.randn(shape, generator=generator).to(t.dtype)
        elif t.dtype == torch.bool:
            examples[name] = torch.zeros(shape, dtype=torch.bool)
        else:
            examples[name] = torch.randint(0, vocab, shape, generator=generator, dtype=t.dtype)
    return examples


def example_input(traced: TracedModel) -> torch.Tensor:
    """A random input of ``example_shape``, the same for the same model (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    dtype = traced.input_dtype
    if dtype.is_floating_point:
        return torch.randn(example_shape(traced), generator=generator).to(dtype)
    return torch.randint(0, vocabulary(traced.spec), example_shape(traced), generator=generator, dtype=dtype)
