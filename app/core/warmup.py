"""Pays torch's one-off costs at start-up instead of on the first request.

The first trace in a process imports and initialises much of torch (decompositions, the FLOP
counter, sympy): 2 to 15 s measured here, which would otherwise land on the first user.
"""

from __future__ import annotations

import logging
import threading

from app.examples import SUMMARY_EXAMPLES
from layers import ModelSpec
from layers.summary import summarize

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Summarise every built-in example once."""
    for example in SUMMARY_EXAMPLES.values():
        request = example["value"]
        model = ModelSpec.model_validate(request["model"])
        summarize(model, tuple(request["input_shape"]), request.get("input_dtype", "float32"))


def warm_up_in_background() -> threading.Thread:
    """Start ``warm_up`` on a daemon thread, so the server answers (``/healthz``) meanwhile."""

    def run() -> None:
        try:
            warm_up()
        except Exception:  # a warm-up failure must never stop the server; the request path reports it
            log.exception("warm-up failed")

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
