"""Brings a successful job's result from its Ray actor into this API, and finishes the job.

The worker may run on another machine, so its weights come back through Ray: the actor's
``result`` says the run is over (metrics, duration, memory, the weights' size and sha256), then
the weights' bytes are fetched ``chunk`` by chunk through Ray's object store and written
atomically under ``MB_DATA_DIR/jobs/<id>/`` (``app.jobs.weights.write_weights``). Only then is
the job ``succeeded`` in the store (so a succeeded job always has its weights), and the actor
ended.

The API process that submitted a job waits for its result in a thread (``watch``). Every API
process's reaper also asks each active job's actor (``poll``), so a job whose API died is
collected by another one, or by the API when it is started again. The actor lets one API
process at a time fetch the bytes (a claim it renews on each chunk); should two still race, both
write the same file, and the store lets one finish the job.

A run can also end in a failure that its worker could not write to the store (a full disk, say):
the actor then holds the reason instead. So does this process when the store refuses the failure
it has to record (weights it could not store, or one such reason): it shows the job as failed
with that reason (``known``) and records it at the next ``poll``, once the store takes writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from app.jobs import ray_runtime
from app.jobs.domain import ACTIVE, Job, JobMemory, JobStatus, Metrics
from app.jobs.retention import job_dir
from app.jobs.store import JobStore, StoreUnavailable
from app.jobs.weights import remove_weights, write_weights

log = logging.getLogger(__name__)
CLAIMANT = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this API process
WAIT_S = 10.0  # one blocking ``result`` call of a watcher; between calls it checks the job is still on
CALL_S = 60.0  # how long a call may take on top (Ray busy, a chunk of 64 MiB on a slow network)
RETRY_S = 1.0  # after a failed call (the actor restarting, Ray busy)


class _ClaimedByAnother(Exception):
    """Another API process holds the claim on a job's weights (``app.jobs.worker.Handoff``)."""


class Collector:
    """This process's watchers and polls (see the module docstring)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._watched: set[str] = set()
        self._unrecorded: dict[str, str] = {}  # job id -> why its run failed, not yet in the store
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, job_id: str) -> None:
        """Collect ``job_id`` as soon as its run succeeds, in a thread of this process."""
        with self._lock:
            if job_id in self._watched:
                return
            self._watched.add(job_id)
        name = f"collect-{job_id[:8]}"
        threading.Thread(target=self._watch, args=(job_id,), name=name, daemon=True).start()

    def known(self, job: Job) -> Job:
        """``job`` as this process knows it: failed, with its reason, when it holds a failure of
        the job that the store did not take yet; else as stored."""
        reason = self._unrecorded.get(job.id)
        if reason is None or job.status not in ACTIVE:
            return job
        return job.model_copy(update={"status": JobStatus.FAILED, "error": reason})

    def holds(self, job_id: str) -> bool:
        """Whether this process holds a failure of ``job_id`` that the store did not take yet."""
        return job_id in self._unrecorded

    def poll(self, job_id: str) -> bool:
        """Record a failure of ``job_id`` held here, or collect the job now if its run is over and
        no watcher of this process has it; whether the job was finished here. ``StoreUnavailable``
        while the store does not take a failure (this process holds it meanwhile)."""
        if (reason := self._unrecorded.get(job_id)) is not None:
            return self._fail(job_id, reason)
        with self._lock:
            if job_id in self._watched:
                return False
        handle = ray_runtime.find_actor(ray_runtime.actor_name(job_id))
        result = self._ask(handle, 0.0) if handle is not None else None
        return result is not None and self._collect(job_id, handle, result)

    def close(self) -> None:
        """Stop watching (the jobs go on; any API process collects them)."""
        self._stop.set()

    def _watch(self, job_id: str) -> None:
        try:
            while not self._stop.is_set():
                handle = ray_runtime.find_actor(ray_runtime.actor_name(job_id))
                if handle is None:
                    return  # it failed, was cancelled, or Ray lost it (the reaper says which)
                result = self._ask(handle, WAIT_S)
                if result is not None:
                    self._collect(job_id, handle, result)
                    return
                job = self.store.get(job_id, with_request=False)
                if job is None or job.status not in ACTIVE:
                    return
        except StoreUnavailable as e:  # the reapers poll this job from now on
            log.warning("job %s: %s; the reapers try again", job_id, e)
        except Exception:
            log.exception("watching job %s failed", job_id)
        finally:
            with self._lock:
                self._watched.discard(job_id)

    def _ask(self, handle: Any, wait_s: float) -> dict[str, Any] | None:
        import ray

        try:
            return ray.get(handle.result.remote(CLAIMANT, wait_s), timeout=wait_s + CALL_S)
        except (ray.exceptions.RayError, TimeoutError):  # restarting, or killed: ask again later
            self._stop.wait(RETRY_S)
            return None

    def _collect(self, job_id: str, handle: Any, result: dict[str, Any]) -> bool:
        """Fetch the weights, store them, finish the job, end the actor; whether this process
        finished the job. A Ray error leaves all as it was (the next poll tries again); bytes
        that cannot be stored or arrive damaged fail the job, with the reason, as does a failure
        the worker could not record."""
        import ray

        if "error" in result:
            return self._fail(job_id, result["error"])
        directory = job_dir(job_id)
        try:
            chunks = self._chunks(handle, result["chunks"])
            write_weights(directory, chunks, result["size_bytes"], result["sha256"])
        except (ray.exceptions.RayError, TimeoutError) as e:
            log.warning("could not fetch the weights of job %s: %s; trying again later", job_id, e)
            return False
        except _ClaimedByAnother:
            return False  # another API process is fetching them; it finishes the job
        except (OSError, ValueError) as e:
            reason = f"the trained weights could not be stored under MB_DATA_DIR: {type(e).__name__}: {e}"
            if not self._succeeded(job_id):  # the weights file without its sidecar, say (a full disk)
                with contextlib.suppress(OSError):  # best effort: its place may be a directory
                    remove_weights(directory)
            return self._fail(job_id, reason)
        memory = None if result["memory"] is None else JobMemory.model_validate(result["memory"])
        finished = self.store.finish(
            job_id,
            JobStatus.SUCCEEDED,
            metrics=Metrics.model_validate(result["metrics"]),
            duration_s=result["duration_s"],
            memory=memory,
        )
        if not finished and not self._succeeded(job_id):
            remove_weights(directory)  # cancelled meanwhile: nothing to keep
        ray_runtime.kill_actor(ray_runtime.actor_name(job_id))
        return finished

    def _chunks(self, handle: Any, count: int) -> Iterator[bytes]:
        import ray

        for i in range(count):
            chunk = ray.get(handle.chunk.remote(CLAIMANT, i), timeout=CALL_S)
            if chunk is None:
                raise _ClaimedByAnother
            yield chunk

    def _fail(self, job_id: str, reason: str) -> bool:
        """Fail the job with ``reason`` and end its actor; whether this process finished the job.
        The reason is held here until the store takes it (``StoreUnavailable`` until then)."""
        self._unrecorded[job_id] = reason
        finished = self.store.finish(job_id, JobStatus.FAILED, reason)
        self._unrecorded.pop(job_id, None)
        ray_runtime.kill_actor(ray_runtime.actor_name(job_id))
        return finished

    def _succeeded(self, job_id: str) -> bool:
        job = self.store.get(job_id, with_request=False)
        return job is not None and job.status == JobStatus.SUCCEEDED
