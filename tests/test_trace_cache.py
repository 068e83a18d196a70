"""The trace cache (layers/analysis/cache.py): an edited model traced with the cache warm gives
byte for byte the answer of a cold trace (errors included), and runs (nearly) nothing on meta."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from reference_specs import CASES
from torch.utils._python_dispatch import TorchDispatchMode

from app.analysis import TRACE_CACHE, summary
from app.core.config import Settings, settings
from app.schemas.summary import SummaryRequest
from layers.analysis.cache import TraceCache
from layers.analysis.memory import estimate_memory
from layers.analysis.trace import trace_model
from layers.language.errors import SpecError

SIZES = ("out_features", "out_channels", "dim_feedforward")


def answer(case: dict, cache: TraceCache | None) -> str:
    """The summary route's answer (or its error) for ``case``, traced with ``cache``."""
    request = SummaryRequest.model_validate(case)
    try:
        traced = trace_model(request.model, tuple(request.input_shape), request.input_dtype, cache=cache)
        training = request.training
        memory = estimate_memory(traced, training.optimizer, training.device) if training else None
    except SpecError as e:
        return json.dumps({"error": type(e).__name__, "loc": e.loc, "msg": e.msg, "ctx": e.ctx})
    return summary(traced, memory).model_dump_json()


def leaves(layers: list[dict]) -> Iterator[dict]:
    for layer in layers:
        yield layer
        for value in layer.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                yield from leaves(value)
            elif isinstance(value, list) and value and isinstance(value[0], list):
                for branch in value:
                    yield from leaves(branch)


def resize(layers: list[dict]) -> None:
    """One layer's size changed: the last untied one with an output size."""
    layer = [x for x in leaves(layers) if any(k in x for k in SIZES) and "tie_weight" not in x][-1]
    size = next(k for k in SIZES if k in layer)
    layer[size] += 1


def insert(layers: list[dict]) -> None:
    layers.insert(len(layers) - 1, {"type": "Dropout", "p": 0.2})


def delete(layers: list[dict]) -> None:
    del layers[1]


def mismatch(layers: list[dict]) -> None:
    """A layer that cannot take its input, after layers found in the cache."""
    layers.insert(3, {"type": "Linear", "in_features": 7, "out_features": 3})


EDITS: dict[str, Callable[[list[dict]], None]] = {
    "resize": resize,
    "insert": insert,
    "delete": delete,
    "mismatch": mismatch,
}


def edited(case: dict, edit: Callable[[list[dict]], None]) -> dict:
    case = copy.deepcopy(case)
    edit(case["model"]["layers"])
    return case


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_edited_model_traced_warm_answers_as_a_cold_trace(name: str) -> None:
    cache = TraceCache(1 << 30)
    case = CASES[name]
    first = answer(case, cache)
    assert answer(case, cache) == first, "the same model, found in the cache"
    for edit_name, edit in EDITS.items():
        changed = edited(case, edit)
        assert answer(changed, cache) == answer(changed, None), edit_name
    assert "Traced so far" in answer(edited(case, mismatch), cache)


class _Operators(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def operators(case: dict, cache: TraceCache) -> int:
    request = SummaryRequest.model_validate(case)
    with _Operators() as ops:
        trace_model(request.model, tuple(request.input_shape), request.input_dtype, cache=cache)
    return ops.count


def test_a_model_found_in_the_cache_runs_nothing_on_meta_but_its_input() -> None:
    cache = TraceCache(1 << 30)
    case = CASES["resnet50"]
    assert operators(case, cache) > 100
    assert operators(case, cache) == 1  # torch.empty of the input


def test_the_cache_stays_under_its_byte_bound_and_keeps_the_latest() -> None:
    case = CASES["vit_b_16"]
    full = TraceCache(1 << 30)
    cold = answer(case, full)
    bound = full.size // 3
    cache = TraceCache(bound)
    assert answer(case, cache) == cold
    assert 0 < cache.size <= bound and 0 < len(cache) < len(full)
    assert answer(case, cache) == cold
    assert answer(case, TraceCache(0)) == cold


def test_a_tied_layer_is_traced_again_and_stays_tied() -> None:
    cache = TraceCache(1 << 30)
    case = CASES["gpt2_small_tied"]
    answer(case, cache)
    request = SummaryRequest.model_validate(case)
    traced = trace_model(request.model, tuple(request.input_shape), request.input_dtype, cache=cache)
    embedding, head = traced.module[0], traced.module[-1]
    assert head.weight is embedding.weight
    assert traced.module[3][0][0].linear1.weight is not traced.module[3][1][0].linear1.weight
    assert all(p.device == torch.device("meta") for p in traced.module.parameters())


def test_the_service_cache_is_bounded_by_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).trace_cache_bytes == 64 << 20
    monkeypatch.setenv("MB_TRACE_CACHE_BYTES", "1000")
    assert Settings(_env_file=None).trace_cache_bytes == 1000
    assert TRACE_CACHE.max_bytes == settings.trace_cache_bytes
