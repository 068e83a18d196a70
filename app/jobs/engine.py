"""Runs jobs as Ray tasks and turns what they report into the stored job.

Each job is one streaming Ray task (``app.jobs.train.train`` yields its events); a monitor
thread per job reads them and writes the store, so training never touches the API's event
loop. Cancel and the hard time limit kill the task (``ray.cancel(force=True)``). A worker that
dies mid-job is not retried: its job fails with the reason Ray gives.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.core.config import settings
from app.jobs import ray_runtime
from app.jobs.plan import JobPlan
from app.jobs.store import JobStore
from app.jobs.train import node_info, train
from layers.errors import SpecError

log = logging.getLogger(__name__)
KILL_GRACE_S = 5.0  # past its limit a job gets this long to stop by itself before it is killed
POLL_S = 1.0
RESTART_REASON = "the API stopped before the job finished (it was restarted or shut down); submit it again"


class QueueFull(Exception):
    """Too many jobs queued or running; the client should retry later."""


class BackendDown(Exception):
    """Ray cannot be started or does not answer; the client should retry later."""


def run_job(payload: dict) -> Iterator[dict[str, Any]]:
    """The Ray task: train, reporting the node it runs on."""
    import ray

    node = node_info(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())
    yield from train(payload, node)


class JobEngine:
    """Submits, watches and cancels jobs; owns the job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._handles: dict[str, Any] = {}  # job id -> ObjectRefGenerator of its running task
        self._monitors: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._remote: Any = None
        failed = store.fail_active(RESTART_REASON)
        if failed:
            log.warning("marked %d jobs left queued or running by an earlier API as failed", failed)

    def start_ray(self) -> None:
        try:
            ray_runtime.ensure_ray()
        except Exception as e:
            raise BackendDown(f"could not start or join Ray: {type(e).__name__}: {e}") from e
        if not ray_runtime.alive():
            raise BackendDown("Ray does not answer; see GET /readyz")
        if self._remote is None:
            import ray

            self._remote = ray.remote(num_returns="streaming", max_retries=0)(run_job)

    def check_device(self, device: str) -> int:
        """GPUs the task should ask Ray for; ``SpecError`` when ``cuda`` is asked of a GPU-less cluster."""
        self.start_ray()
        gpus = ray_runtime.gpu_count()
        if device == "cuda" and gpus < 1:
            raise SpecError(
                ("device",),
                "device 'cuda' was asked for but the Ray cluster has no GPU; use 'auto' or 'cpu'",
                {"cluster_gpus": gpus},
            )
        return 1 if device == "cuda" or (device == "auto" and gpus >= 1) else 0

    def check_memory(self, allowance: int) -> None:
        """``SpecError`` when no Ray node could ever hold ``allowance`` (the task would wait forever)."""
        import ray

        largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if allowance > largest:
            raise SpecError(
                ("model",),
                f"this job's memory allowance ({allowance} bytes: its estimate with headroom) is more "
                f"than any Ray node offers ({int(largest)} bytes)",
                {"allowance": allowance, "largest_node_memory": int(largest)},
            )

    def submit(self, request: dict, plan: JobPlan, device: str) -> dict:
        """Store and start a job: the job as queued (a fast worker may already run it).

        Raises ``SpecError`` (device), ``QueueFull`` or ``BackendDown``.
        """
        num_gpus = self.check_device(device)
        self.check_memory(plan.memory_allowance_bytes)
        with self._lock:
            if self.store.count_active() >= settings.max_queued_jobs:
                raise QueueFull(f"{settings.max_queued_jobs} jobs are already queued or running")
            job_id = uuid.uuid4().hex
            self.store.create(job_id, request, plan.memory_estimate_bytes)
            queued = self.store.get(job_id)
            # memory=: Ray places the job where that much memory is free (the worker holds it to it).
            handle = self._remote.options(
                num_cpus=1, num_gpus=num_gpus, memory=plan.memory_allowance_bytes, name=f"train-{job_id[:8]}"
            ).remote(plan.payload)
            self._handles[job_id] = handle
            monitor = threading.Thread(
                target=self._monitor,
                args=(job_id, handle, plan.payload["time_limit_s"]),
                name=f"job-{job_id[:8]}",
                daemon=True,
            )
            self._monitors[job_id] = monitor
        monitor.start()
        return queued

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it had already finished."""
        if not self.store.finish(job_id, "cancelled", "cancelled by request"):
            return False
        handle = self._handles.get(job_id)
        if handle is not None:
            import ray

            ray.cancel(handle, force=True)
        return True

    def close(self) -> None:
        """Stop watching; jobs still active die with this process, so they are marked failed."""
        self._closing.set()
        for job_id, handle in list(self._handles.items()):
            if self.store.finish(job_id, "failed", RESTART_REASON):
                import ray

                ray.cancel(handle, force=True)
        for monitor in list(self._monitors.values()):
            monitor.join(timeout=2 * POLL_S)
        self.store.close()

    def _monitor(self, job_id: str, handle: Any, time_limit_s: float) -> None:
        try:
            self._follow(job_id, handle, time_limit_s)
        except Exception as e:
            if not self._closing.is_set():
                self.store.finish(job_id, "failed", _ray_failure(e))
        finally:
            with self._lock:
                self._handles.pop(job_id, None)
                self._monitors.pop(job_id, None)

    def _follow(self, job_id: str, handle: Any, time_limit_s: float) -> None:
        import ray

        kill_at: float | None = None
        while not self._closing.is_set():
            ready, _ = ray.wait([handle], timeout=POLL_S)
            if not ready:
                if kill_at is not None and time.monotonic() > kill_at:
                    ray.cancel(handle, force=True)
                    reason = f"timed out: the job ran past its {time_limit_s:g} s limit and was killed"
                    self.store.finish(job_id, "failed", reason)
                    return
                continue
            try:
                event = ray.get(next(handle))
            except StopIteration:
                self.store.finish(job_id, "failed", "the worker stopped without reporting a result")
                return
            kind = event.pop("kind")
            if kind == "started":
                self.store.mark_running(job_id, event["device"], event["node"])
                kill_at = time.monotonic() + time_limit_s + KILL_GRACE_S
            elif kind == "progress":
                self.store.record_progress(job_id, event)
            elif kind == "epoch":
                progress = event.pop("progress")
                self.store.record_epoch(job_id, event, progress)
            elif kind == "done":
                metrics, duration = event["metrics"], event["duration_s"]
                memory = event.get("memory")
                self.store.finish(job_id, "succeeded", metrics=metrics, duration_s=duration, memory=memory)
                return
            elif kind == "failed":
                self.store.finish(job_id, "failed", event["error"])
                return


def _ray_failure(error: Exception) -> str:
    """A clear reason for a job whose task Ray reports as lost."""
    from ray import exceptions as rx

    if isinstance(error, rx.TaskCancelledError):
        return "cancelled"
    if isinstance(error, rx.OutOfMemoryError):
        return "the worker ran out of memory and Ray killed it"
    if isinstance(error, rx.WorkerCrashedError):
        return "the worker process died mid-job (killed or crashed); the job was not retried"
    if isinstance(error, rx.NodeDiedError):
        return "the Ray node running the job died; the job was not retried"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"lost the job's Ray task: {type(error).__name__}: {first_line}"


@asynccontextmanager
async def jobs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the job store (failing jobs a previous API left active) and, if eager, start Ray."""
    engine = JobEngine(JobStore(settings.data_dir))
    app.state.jobs = engine
    if settings.ray_eager_start:
        threading.Thread(target=_start_quietly, args=(engine,), name="ray-start", daemon=True).start()
    try:
        yield
    finally:
        engine.close()


def _start_quietly(engine: JobEngine) -> None:
    try:
        engine.start_ray()
    except Exception:  # readiness reports it; the first job retries the start
        log.exception("could not start Ray")
