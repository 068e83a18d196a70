"""Pays torch's one-off costs at start-up instead of on the first request.

The first trace in a process imports and initialises much of torch (decompositions, the FLOP
counter, sympy): 2 to 15 s measured here, which would otherwise land on the first user.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.analysis import summarize
from app.examples import SUMMARY_EXAMPLES
from app.schemas.summary import SummaryRequest

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 60  # one example traces in well under this, even on a loaded machine


def warm_up(stop: threading.Event | None = None) -> None:
    """Summarise every built-in example once (until ``stop`` is set)."""
    for example in SUMMARY_EXAMPLES.values():
        if stop is not None and stop.is_set():
            return
        request = SummaryRequest.model_validate(example["value"])
        summarize(request.model, request.input_shape, request.input_dtype)


@contextmanager
def warming_up() -> Iterator[None]:
    """Run ``warm_up`` on a thread while the server answers (``/healthz``), and stop it on exit.

    The thread is stopped and joined, not left behind: a process that exits while a thread is
    inside torch's C++ code aborts ("terminate called without an active exception").
    """
    stop = threading.Event()

    def run() -> None:
        try:
            warm_up(stop)
        except Exception:  # a warm-up failure must never stop the server; the request path reports it
            log.exception("warm-up failed")

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=JOIN_TIMEOUT_S)
