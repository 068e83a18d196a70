"""The trace-time budget: a model too slow to trace is refused at the layer where it stopped."""

from __future__ import annotations

from app.core.config import settings
from app.core.warmup import warm_up

# One 64-layer bidirectional LSTM takes tenths of a second to trace on meta, far past 1 ms.
SLOW_LSTM = {"type": "LSTM", "hidden_size": 8, "num_layers": 64, "bidirectional": True}


def test_trace_past_its_budget_is_a_422_at_the_layer_it_stopped_in(client, monkeypatch):
    """Checked at every operator, so the trace stops inside the first LSTM (tests/test_trace_budget.py)."""
    monkeypatch.setattr(settings, "max_trace_seconds", 0.001)
    body = {"model": {"layers": [SLOW_LSTM, SLOW_LSTM, SLOW_LSTM]}, "input_shape": [2, 3, 8]}
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["type"] == "limit_exceeded"
    assert detail["loc"] == ["body", "model", "layers", 0]
    assert "0.001 s" in detail["msg"] and "in this LSTM" in detail["msg"]


def test_same_model_within_the_default_budget_is_summarised(client):
    body = {"model": {"layers": [SLOW_LSTM]}, "input_shape": [2, 3, 8]}
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 200
    assert response.json()["output_shape"] == [2, 3, 16]


def test_warm_up_traces_every_example():
    warm_up()  # raises if any built-in example stopped tracing
