"""A job's Ray actor: trains, writes the job's events to the store itself, and hands its result
(final metrics and the trained weights' bytes) to the API through Ray.

The actor is detached and named (``ray_runtime.actor_name``), so it lives on when the API that
started it dies, and any API process can find it (to cancel it, or to collect its result) by
name. Training runs in a thread started by the constructor: when Ray restarts the actor after
its process died (``max_restarts``), it runs the constructor again, and the loop resumes from the
job's last checkpoint. The actor opens its own store from the plain values it is given (a
worker's environment need not hold the API's settings).

A run that succeeds does not finish its job: the job stays ``running`` until an API process has
fetched the weights (``result``, then ``chunk`` by chunk: the worker may be on another machine)
and stored them under its ``MB_DATA_DIR`` (``app.jobs.collect``), which then finishes the job and
ends the actor. A failed or refused run ends the actor at once, unless the store refused to take
the failure (a full disk, say): then its reason waits in the actor for an API process, which
shows it and records it once the store takes writes again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from app.jobs.domain import JobStatus, NodeInfo
from app.jobs.events import Done, EpochEvent, Failed, ProgressEvent, Started, WorkerEvent
from app.jobs.store import JobStore, StoreUnavailable
from app.jobs.train import node_info, train

log = logging.getLogger(__name__)
CHUNK_BYTES = 64 << 20  # the weights travel in pieces of this size: neither side holds two copies
CLAIM_S = 60.0  # an API process fetching the weights has them to itself while it keeps asking
MAX_CONCURRENCY = 8  # calls served at once: an API's blocking ``result`` must not hold up the others


class Handoff:
    """A run's result, held for the API. A success's weights go to one API process at a time: the
    first to fetch a chunk claims them, and the claim lapses ``CLAIM_S`` after its holder last
    fetched, should that process die mid-fetch. Asking for the result claims nothing: an API
    killed while its ``result`` call waited would otherwise hold the weights from the next API
    for ``CLAIM_S``. A failure's result (``{"error": reason}``: one the store did not take) goes to any."""

    def __init__(self) -> None:
        self._weights = b""
        self._result: dict[str, Any] | None = None
        self._ready = threading.Event()
        self._claim: tuple[str, float] | None = None  # (API process, when it last asked)
        self._lock = threading.Lock()

    def publish(self, outcome: Done | Failed) -> None:
        if isinstance(outcome, Failed):
            self._result = {"error": outcome.error}
            self._ready.set()
            return
        self._weights = outcome.weights
        self._result = {  # plain values: any API process reads them, through Ray
            "metrics": outcome.metrics.model_dump(),
            "duration_s": outcome.duration_s,
            "memory": None if outcome.memory is None else outcome.memory.model_dump(),
            "size_bytes": len(outcome.weights),
            "sha256": hashlib.sha256(outcome.weights).hexdigest(),
            "chunks": math.ceil(len(outcome.weights) / CHUNK_BYTES),
        }
        self._ready.set()

    def result(self, claimant: str, wait_s: float) -> dict[str, Any] | None:
        """The result without the weights' bytes (metrics, duration, memory, the weights' size,
        sha256 and chunk count; or the failure's ``error``), once there is one (waiting up to
        ``wait_s``); None before, or while another API process holds a success's claim."""
        if not self._ready.wait(max(0.0, wait_s)):
            return None
        if self._result is not None and "error" in self._result:
            return self._result
        with self._lock:
            return None if self._claimed_by_another(claimant) else self._result

    def chunk(self, claimant: str, index: int) -> bytes | None:
        """Piece ``index`` of the weights' bytes, claiming them for ``claimant`` (or keeping its
        claim); None while another API process holds the claim."""
        with self._lock:
            if self._claimed_by_another(claimant):
                return None
            self._claim = (claimant, time.monotonic())
        return self._weights[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]

    def _claimed_by_another(self, claimant: str) -> bool:
        claim = self._claim
        return claim is not None and claim[0] != claimant and time.monotonic() - claim[1] < CLAIM_S


class JobActor:
    """One job's worker process (see the module docstring)."""

    def __init__(
        self, job_id: str, payload: dict, data_dir: str, database_url: str | None, store_retry_s: float
    ) -> None:
        import ray

        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._start(job_id, payload, data_dir, database_url, store_retry_s, restarted)

    def _start(
        self,
        job_id: str,
        payload: dict,
        data_dir: str,
        database_url: str | None,
        store_retry_s: float,
        restarted: bool,
    ) -> None:
        """Run the job in a thread of this actor; ``restarted``: an earlier run of it died."""
        import ray

        node = node_info(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())
        self.restarted = restarted
        self.handoff = Handoff()
        store = JobStore(Path(data_dir), database_url, retry_seconds=store_retry_s, migrate=False)
        args = (store, job_id, payload, node, restarted)
        threading.Thread(target=self._run, args=args, name=f"job-{job_id[:8]}", daemon=True).start()

    def result(self, claimant: str, wait_s: float) -> dict[str, Any] | None:
        return self.handoff.result(claimant, wait_s)

    def chunk(self, claimant: str, index: int) -> bytes | None:
        return self.handoff.chunk(claimant, index)

    def _run(self, store: JobStore, *args: Any) -> None:
        try:
            outcome = run(store, *args)
        except Exception:  # not a store's refusal (run() hands those over): the reapers fail the job
            log.exception("job actor failed")
            outcome = None
        finally:
            store.close()
        if outcome is None:
            _end_self()
        else:
            self.handoff.publish(outcome)  # an API process collects it, then ends this actor


def _end_self() -> None:
    """End this actor for good (Ray would otherwise keep it, or restart it)."""
    import ray

    try:
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:  # never linger holding a CPU: a restart finds the job over and ends
        log.exception("job actor could not end itself")
        os._exit(1)


def run(store: JobStore, job_id: str, payload: dict, node: NodeInfo, restarted: bool) -> Done | Failed | None:
    """Train ``payload``, writing each event of job ``job_id`` to ``store``. Returns what goes to
    the API through Ray: the ``Done`` of a successful run (the job is still ``running``: the API
    finishes it), or the ``Failed`` of a run whose failure the store did not take; else None (the
    job is over, and the store says so)."""
    event: WorkerEvent | None = None
    try:
        for event in train(payload, node):
            if isinstance(event, Done):
                return event
            if not record(store, job_id, event, restarted):
                return None
        return None
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        reason = f"the worker could not record the job: {type(e).__name__}: {first_line}"
        if isinstance(event, Failed):
            reason = event.error  # the run's own reason, not the store's
        if isinstance(e, StoreUnavailable):  # it already retried for store_retry_s
            log.warning("job %s: %s; its failure goes to the API: %s", job_id, e, reason)
            return Failed(error=reason)
        log.exception("job %s: the worker could not record an event", job_id)
        return _fail(store, job_id, reason)


def _fail(store: JobStore, job_id: str, reason: str) -> Failed | None:
    """Fail the job in the store; when the store takes no writes, the ``Failed`` for the API."""
    try:
        store.finish(job_id, JobStatus.FAILED, reason)
    except StoreUnavailable:
        return Failed(error=reason)
    return None


def record(store: JobStore, job_id: str, event: WorkerEvent, restarted: bool) -> bool:
    """Write one event (all but ``Done``, which goes to the API); False when the job is over
    (finished, or cancelled meanwhile)."""
    match event:
        case Started():
            if store.mark_running(job_id, event.device, event.node):  # queued -> running
                if restarted:  # the first attempt died before it could say it had started
                    store.add_restart(job_id, event.node)
                return True
            job = store.get(job_id, with_request=False)
            if not restarted or job is None or job.status != JobStatus.RUNNING:
                return False  # cancelled, reaped or finished meanwhile
            store.add_restart(job_id, event.node)
            return True
        case ProgressEvent():
            store.record_progress(job_id, event.progress)
            return True
        case EpochEvent():  # idempotent per epoch: a resumed run reports its checkpoint's again
            store.record_epoch(job_id, event.entry, event.progress)
            return True
        case Failed():
            store.finish(job_id, JobStatus.FAILED, event.error)
    return False
