"""Every registered container, through the three passes of the one walk (layers/language/walk.py):
the build, the trace on meta and the exported Python code give the same module (``print(model)``,
parameter names and shapes, weight ties) and, on real tensors, the same output as the same model
written by hand in torch.

Parametrised over the containers in ``layers.LAYER_SPECS``: a container added to the registry
without a sample here (and in tests/test_registry.py) fails until someone writes one.
"""

from __future__ import annotations

import pytest
import torch
from test_registry import SAMPLES, real_input
from torch import nn

from layers import LAYER_SPECS, ContainerSpec, ModelSpec
from layers.analysis.trace import TracedModel, trace_model
from layers.export.codegen import python_file
from layers.language.walk import nodes

CONTAINERS = sorted(name for name, cls in LAYER_SPECS.items() if issubclass(cls, ContainerSpec))


def linear(**fields: object) -> dict:
    return {"type": "Linear", "out_features": 4, **fields}


# Each container with a named layer and a tie to it across the container's sequences (or, for a
# Repeat, from every copy): the walk enters names and resolves ties alike in every pass. Input [2, 4].
TIED: dict[str, list[dict]] = {
    "Sequential": [
        linear(name="a"),
        {"type": "Sequential", "layers": [linear(tie_weight="a"), {"type": "ReLU"}]},
    ],
    "Residual": [{"type": "Residual", "layers": [linear(name="a")], "shortcut": [linear(tie_weight="a")]}],
    "Concat": [{"type": "Concat", "dim": -1, "branches": [[linear(name="a")], [linear(tie_weight="a")]]}],
    "Multiply": [{"type": "Multiply", "branches": [[linear(name="a")], [linear(tie_weight="a")], []]}],
    "Repeat": [
        linear(name="a"),
        {"type": "Repeat", "times": 3, "layers": [linear(tie_weight="a"), {"type": "Tanh"}]},
    ],
}


def exported(traced: TracedModel) -> nn.Module:
    """``build_model()`` of the exported file, run in a namespace of its own."""
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(python_file(traced, "a test"), "model.py", "exec"), namespace)  # the file under test
    return namespace["build_model"]()


def built_three_ways(
    layers: list[dict], shape: list[int], dtype: str
) -> tuple[TracedModel, nn.Module, nn.Module]:
    """The trace (meta), and the real model from the build and from the exported code, each seeded alike."""
    traced = trace_model(ModelSpec.model_validate({"layers": layers}), tuple(shape), dtype)
    torch.manual_seed(0)
    built = traced.spec.build()
    torch.manual_seed(0)
    return traced, built, exported(traced)


def parameters(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}


def assert_same_module(traced: TracedModel, built: nn.Module, code: nn.Module) -> None:
    assert str(built) == str(code) == str(traced.module)
    assert parameters(built) == parameters(code) == parameters(traced.module)
    for name, tensor in built.state_dict().items():  # built in the same order: the same initial values
        torch.testing.assert_close(code.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for node in traced.layers:  # every node the trace saw is a module of the built model, of its class
        assert type(built.get_submodule(node.path)) is type(node.module), node.path


def test_every_container_has_its_cases() -> None:
    assert set(SAMPLES) >= set(CONTAINERS) and set(TIED) == set(CONTAINERS)


@pytest.mark.parametrize("layer_type", CONTAINERS)
def test_build_trace_and_code_are_the_hand_written_module(layer_type: str) -> None:
    sample = SAMPLES[layer_type]
    traced, built, code = built_three_ways([sample.spec], sample.input_shape, sample.input_dtype)
    assert_same_module(traced, built, code)
    reference = nn.Sequential(sample.reference())
    assert str(reference) == str(built) and parameters(reference) == parameters(built)
    for model in (built, code):
        model.load_state_dict(reference.state_dict(), strict=True)
    x = real_input(sample.input_shape, sample.input_dtype)
    with torch.no_grad():
        expected = reference.train(False)(x)
        for model in (built, code):
            torch.testing.assert_close(model.train(False)(x), expected)
    assert tuple(expected.shape) == traced.output_shape


@pytest.mark.parametrize("layer_type", CONTAINERS)
def test_names_and_ties_resolve_alike_in_every_pass(layer_type: str) -> None:
    traced, built, code = built_three_ways(TIED[layer_type], [2, 4], "float32")
    assert_same_module(traced, built, code)
    ties = {node.path: node.tied["weight"] for node in traced.layers if node.tied}  # layer -> owner
    assert ties, "the case has a tie"
    for model in (built, code):
        for path, owner in ties.items():  # one tensor
            assert model.get_submodule(path).weight is model.get_submodule(owner).weight, path
    x = torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(code(x), built(x))


@pytest.mark.parametrize("layer_type", CONTAINERS)
def test_the_lazy_walk_meets_the_nodes_the_trace_visits(layer_type: str) -> None:
    """``walk.nodes`` (the limits' walk) and the visiting walk (the passes') see the same tree."""
    spec = ModelSpec.model_validate({"layers": TIED[layer_type]})
    traced = trace_model(spec, (2, 4))
    walked = [(node.loc, node.path, node.depth, node.repeat) for node in nodes(spec.layers)]
    assert walked == [(n.loc, n.path, n.depth, n.repeat) for n in traced.layers]
