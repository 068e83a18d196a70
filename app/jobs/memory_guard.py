"""Holds a job to its memory allowance, so that a job whose estimate is wrong cannot take the host down.

Two lines of defence, both scoped to a ``with MemoryGuard(...)`` block in the worker process:

- a hard cap: on the CPU the process's address-space limit (``RLIMIT_AS``, soft limit only) is
  lowered to what it uses now plus the allowance, so an allocation past it fails at once inside
  torch (``DefaultCPUAllocator: can't allocate memory``) instead of growing the process; on CUDA
  (whose driver reserves far more address space than it uses, so ``RLIMIT_AS`` cannot apply)
  ``torch.cuda.set_per_process_memory_fraction`` caps the caching allocator the same way;
- a watchdog thread that reads the process's resident memory every ``poll_s`` and, past the
  baseline plus the allowance, raises ``MemoryAllowanceExceeded`` in the guarded thread.

Both are undone on exit (Ray reuses worker processes). ``explain`` turns what the job died of
into a reason a user can read. Usable from a Ray task or a Ray actor alike.
"""

from __future__ import annotations

import ctypes
import resource
import threading
from types import TracebackType

import torch

PAGE = resource.getpagesize()


class MemoryAllowanceExceeded(Exception):
    """The guarded job's resident memory went past its allowance."""


def _statm() -> tuple[int, int]:
    """(virtual size, resident size) of this process in bytes."""
    with open("/proc/self/statm") as f:
        size, resident = f.read().split()[:2]
    return int(size) * PAGE, int(resident) * PAGE


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


class MemoryGuard:
    """Hold the code in the block to ``allowance_bytes`` more memory than the process has now."""

    def __init__(
        self,
        allowance_bytes: int,
        device: torch.device | str = "cpu",
        estimate_bytes: int | None = None,
        host_allowance_bytes: int | None = None,
        poll_s: float = 0.05,
    ) -> None:
        """``host_allowance_bytes``: what the watchdog allows the process's resident memory to
        grow by (default: the allowance; a CUDA job also needs room for the CUDA runtime)."""
        self.allowance = int(allowance_bytes)
        self.host_allowance = int(host_allowance_bytes or allowance_bytes)
        self.device = torch.device(device)
        self.estimate = estimate_bytes
        self.poll_s = poll_s
        self.peak_rss_growth = 0
        self.tripped: str | None = None  # the watchdog's reason, once it fired
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._old_limit: tuple[int, int] | None = None
        self._old_fraction: float | None = None

    def __enter__(self) -> MemoryGuard:
        # The watchdog first: a thread's stack is address space too, and could not start under the cap.
        self._rss0 = _statm()[1]
        self._thread_id = threading.get_ident()
        self._watchdog = threading.Thread(target=self._watch, name="memory-guard", daemon=True)
        self._watchdog.start()
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            self._old_fraction = 1.0
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.allowance / total), self.device)
        else:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = _statm()[0] + self.allowance
            if hard == resource.RLIM_INFINITY or cap < hard:
                self._old_limit = (soft, hard)
                resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
        if self._old_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, self._old_limit)
        if self._old_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(self._old_fraction, self.device)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            growth = _statm()[1] - self._rss0
            self.peak_rss_growth = max(self.peak_rss_growth, growth)
            if growth > self.host_allowance and self.tripped is None:
                self.tripped = f"its resident memory grew by {_mib(growth)}"
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread_id), ctypes.py_object(MemoryAllowanceExceeded)
                )
                return

    def explain(self, error: BaseException) -> str | None:
        """A clear reason when ``error`` is the guard stopping the job, else None."""
        text = str(error)
        over_cap = (
            isinstance(error, MemoryError)
            or (
                isinstance(error, RuntimeError)
                and ("can't allocate memory" in text or "out of memory" in text.lower())
            )
            # a library loaded lazily under the cap (scipy's BLAS, say) cannot map its segments
            or (isinstance(error, (ImportError, OSError)) and "failed to map segment" in text)
        )
        if self.tripped is None and not isinstance(error, MemoryAllowanceExceeded) and not over_cap:
            return None
        what = self.tripped or "an allocation went past the cap"
        estimate = f" (its estimate was {_mib(self.estimate)})" if self.estimate is not None else ""
        return (
            f"out of memory: the job went over its memory allowance of {_mib(self.allowance)}{estimate}: "
            f"{what}; it was stopped so that the worker and other jobs carry on"
        )
