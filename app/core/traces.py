"""Trace slots: at most ``MB_MAX_CONCURRENT_TRACES`` meta traces (and exports) at once, for every
route; each runs in a worker of the trace pool (``app.core.trace_pool``), or with
``MB_TRACE_PROCESSES=0`` in the thread pool.

Tracing is CPU-bound Python: threads tracing at once only contend for the GIL. A request waits
for its slot on the event loop (an ``asyncio`` semaphore), holding no thread of the pool, so
waiting summaries cannot starve ``/readyz`` or the job routes. While its trace runs, the request
watches its client: once the client has gone, the trace is told to stop at its next operator.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.core import trace_pool
from app.core.config import settings
from layers.analysis.budget import TraceBudget

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, but the access log does

# One semaphore per event loop (an asyncio primitive belongs to one loop; tests run several).
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(settings.max_concurrent_traces)
    return _slots[loop]


async def run_trace(request: Request, trace: Callable[[threading.Event], T]) -> T:
    """``trace(cancelled)`` in the thread pool once a slot is free; ``cancelled`` is set when the
    client disconnects (the trace then raises ``TraceCancelled``, which propagates)."""
    async with _slot():
        cancelled = threading.Event()
        task = asyncio.ensure_future(run_in_threadpool(trace, cancelled))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    cancelled.set()
        finally:
            # Also on our own cancellation: stop the thread, and keep the slot until it has.
            cancelled.set()
            if not task.done():
                await asyncio.wait({task})


async def run_task(
    request: Request, task: Callable[..., T], *args: Any, seconds: tuple[float, str] | None = None
) -> T:
    """``task(budget, *args)`` under a trace slot, within ``seconds`` (CPU seconds and the setting
    that gives them; default ``MB_MAX_TRACE_SECONDS``): in a trace worker, which is killed past
    it, or in the thread pool under the per-operator budget. ``task`` and ``args`` are pickled to
    the worker: a function of a module, and plain data."""
    pool = trace_pool.current()
    if pool is None:
        return await run_trace(
            request, lambda cancelled: task(TraceBudget(settings.max_trace_seconds, cancelled), *args)
        )
    limit, setting = (settings.max_trace_seconds, "MB_MAX_TRACE_SECONDS") if seconds is None else seconds
    async with _slot():
        return await pool.run(request, limit, setting, task, *args)
