"""Warm trace worker processes: summaries, ``/fit`` and exports traced outside the API process.

Tracing holds the GIL, so ``MB_TRACE_PROCESSES`` processes (default: the number of cores; 0:
trace in the API process) let one API process use every core. They are forked from a
``forkserver`` that imported torch and the registry and warmed up once
(``app.core.trace_forkserver``), so a replacement starts warm in milliseconds, and none is a fork
of the threaded server.

The API bounds a task from outside, every ``POLL_S``: past its CPU seconds (+ ``GRACE_S``), or its
worker's resident memory past ``MB_TRACE_MEMORY_BYTES``, the worker is killed and replaced, and
the request gets a 422 naming the limit. A worker that dies on its own (a segfault, the OOM
killer) costs its request a 503 (``WorkerCrashed``), never the API process. A client that
disconnects has its worker killed too. Each worker keeps its own per-layer trace cache
(``app.analysis.TRACE_CACHE``). CPU time and memory are read from ``/proc`` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request

from app.core.config import Settings, settings
from layers.analysis.budget import TraceBudget, TraceCancelled
from layers.language.errors import LimitError

T = TypeVar("T")
POLL_S = 0.05
GRACE_S = 0.5  # of CPU time past the budget: the worker's own between-layer check names the layer first
WALL_FACTOR = 4  # a task waiting on something (not using CPU) is stopped after this many budgets of wall time
START_S = 120.0  # a worker not ready by then (a loaded machine) is a 503
PRELOAD = ["app.core.trace_forkserver"]  # torch, the registry and the tasks, warmed up
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
log = logging.getLogger(__name__)


class WorkerCrashed(Exception):
    """The worker running a request died on its own (answered 503 by ``app.core.errors``)."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def _serve(conn: Connection) -> None:
    """A worker's loop: ``(settings, fn, args)`` in, ``fn(budget, *args)`` run, ``("ok", result)``
    or ``("error", exc)`` out. The budget is checked between layers: a layer past it is named."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the API, which stops its workers
    conn.send("ready")
    while True:
        try:
            current, fn, args = conn.recv()
        except (EOFError, OSError):
            return  # the API is gone
        settings.__dict__.update(current.__dict__)  # the API's settings now (tests change them)
        try:
            budget = TraceBudget(settings.max_trace_seconds, per_operator=False)
            answer: tuple[str, Any] = ("ok", fn(budget, *args))
        except BaseException as exc:  # sent back: the API raises it in the request
            answer = ("error", exc)
        try:
            conn.send(answer)
        except Exception:  # an exception that does not pickle: a bug of ours, with its traceback
            conn.send(("error", RuntimeError("".join(traceback.format_exception(answer[1])))))


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(5)
        self.conn.close()


class TracePool:
    """``processes`` warm workers; ``run`` takes an idle one for a task and bounds it."""

    def __init__(self, processes: int, memory_bytes: int | None) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.memory_bytes = memory_bytes
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.workers: set[int] = set()  # pids of the live workers
        self.closed = False
        for _ in range(processes):
            self._start()

    def _start(self) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(theirs,), daemon=True, name="trace-worker")
        process.start()
        theirs.close()
        with self.lock:
            self.idle.append(_Worker(process, ours))
            self.workers.add(process.pid or 0)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self.lock:
            self.workers.discard(worker.pid)
        if not self.closed:
            self._start()

    async def _take(self) -> _Worker:
        deadline = time.monotonic() + START_S
        while True:
            with self.lock:
                found = next((w for w in self.idle if w.ready or w.conn.poll()), None)
                if found is not None:
                    self.idle.remove(found)
            if found is not None:
                try:
                    found.ready = found.ready or found.conn.recv() == "ready"
                    return found
                except (EOFError, OSError):  # it died starting
                    await asyncio.to_thread(self._replace, found)
                    continue
            if time.monotonic() > deadline:
                raise WorkerCrashed("no trace worker became ready")
            await asyncio.sleep(POLL_S)

    async def run(
        self, http: Request | None, seconds: float, setting: str, fn: Callable[..., T], *args: Any
    ) -> T:
        """``fn(budget, *args)`` in a worker within ``seconds`` of its CPU time (``setting``: the
        name that sets them) and the memory cap."""
        worker = await self._take()
        done = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        loop.add_reader(worker.conn.fileno(), lambda: done.done() or done.set_result(None))
        healthy = False
        try:
            try:
                cpu0, wall0 = _cpu_seconds(worker.pid), time.monotonic()
                worker.conn.send((settings, fn, args))
            except OSError as e:  # it died idle
                raise WorkerCrashed(
                    "the trace worker died before this request; a new one takes the next"
                ) from e
            while not done.done():
                await asyncio.wait({done}, timeout=POLL_S)
                if done.done():
                    break
                if http is not None and await http.is_disconnected():
                    raise TraceCancelled("the client went away")
                with contextlib.suppress(OSError):  # gone: the pipe says so
                    used = _cpu_seconds(worker.pid) - cpu0
                    if used > seconds + GRACE_S or time.monotonic() - wall0 > WALL_FACTOR * seconds + 1:
                        raise _over_time(seconds, setting)
                    if self.memory_bytes is not None and _rss_bytes(worker.pid) > self.memory_bytes:
                        raise _over_memory(self.memory_bytes)
            # uvloop makes a watched fd non-blocking: read the whole answer blocking (it is written
            # by a worker that has finished, so this takes milliseconds even for a large one).
            loop.remove_reader(worker.conn.fileno())
            os.set_blocking(worker.conn.fileno(), True)
            try:
                status, value = worker.conn.recv()
            except (EOFError, OSError) as e:
                worker.process.join(1)
                raise WorkerCrashed(
                    f"the trace worker died (exit code {worker.process.exitcode}) while working on this "
                    "request; the service is up and a new worker takes the next one"
                ) from e
            healthy = True
        finally:
            loop.remove_reader(worker.conn.fileno())
            if healthy and not self.closed:
                with self.lock:
                    self.idle.append(worker)
            else:
                await asyncio.to_thread(self._replace, worker)
        if status == "error":
            raise value
        return value

    def busy(self) -> set[int]:
        """The pids of the workers running a task now."""
        with self.lock:
            return self.workers - {worker.pid for worker in self.idle}

    def close(self) -> None:
        """Stop every worker and the forkserver (the API's shutdown, a test's end)."""
        self.closed = True
        with self.lock:
            idle, self.idle = self.idle, []
            pids, self.workers = set(self.workers), set()
        for worker in idle:
            worker.kill()
        for pid in pids:  # busy ones: their tasks then end with WorkerCrashed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from multiprocessing import forkserver, resource_tracker

        # The forkserver and the resource tracker it started: no process outlives the API.
        for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
            with contextlib.suppress(Exception):
                helper._stop()  # type: ignore[attr-defined]


def _over_time(seconds: float, setting: str) -> LimitError:
    what = "exporting" if setting == "MB_MAX_EXPORT_SECONDS" else "tracing"
    return LimitError(
        ("model",),
        f"{what} the model took more than {seconds:g} s of CPU time ({setting}); its trace worker "
        "was stopped. Use fewer or smaller layers",
        {"limit_s": seconds},
    )


def _over_memory(limit: int) -> LimitError:
    return LimitError(
        ("model",),
        f"tracing or exporting the model took more than {limit} bytes of memory "
        "(MB_TRACE_MEMORY_BYTES); its trace worker was stopped. Use fewer or smaller layers",
        {"limit_bytes": limit},
    )


_pool: TracePool | None = None


def start(config: Settings = settings) -> TracePool | None:
    """The pool of ``config.trace_processes`` workers, unset: one per core (None for 0: traces run
    in the API)."""
    global _pool
    processes = os.cpu_count() or 1 if config.trace_processes is None else config.trace_processes
    if _pool is None and processes > 0:
        _pool = TracePool(processes, config.trace_memory_bytes)
    return _pool


def stop() -> None:
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.close()


def current() -> TracePool | None:
    return _pool
