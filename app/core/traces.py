"""Trace slots: at most ``MB_MAX_CONCURRENT_TRACES`` meta traces at once, for every route.

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
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.core.config import settings

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
