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


def example_input(traced: TracedModel) -> torch.Tensor:
    """A random input of ``example_shape``, the same for the same model (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    dtype = traced.input_dtype
    if dtype.is_floating_point:
        return torch.randn(example_shape(traced), generator=generator).to(dtype)
    return torch.randint(0, vocabulary(traced.spec), example_shape(traced), generator=generator, dtype=dtype)
