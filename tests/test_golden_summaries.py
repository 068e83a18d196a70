"""Summaries of the reference models, byte for byte as the release before the layout change
answered them (tests/golden/, made by tests/golden/make_golden.py at that commit), but for the
fields layer types gained since, which each spec in them shows at its default (issue 18:
``ceil_mode`` on the pools, ``qkv_bias`` and ``out_bias`` on CausalSelfAttention, filled from
``bias``); without those keys the files are that commit's bytes."""

from __future__ import annotations

import json
import pathlib

import pytest
from reference_specs import CASES

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_is_byte_identical_to_the_golden_file(client, name: str) -> None:
    request = json.loads((GOLDEN / f"{name}.request.json").read_text())
    assert request == CASES[name], "the stored request is the case's spec"
    response = client.post("/v1/models/summary", json=request)
    assert response.status_code == 200, response.text[:500]
    assert response.content == (GOLDEN / f"{name}.response.json").read_bytes()
