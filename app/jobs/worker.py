"""A job's Ray actor: trains, writes the job's events to the store itself, then ends itself.

The actor is detached and named (``ray_runtime.actor_name``), so it lives on when the API that
started it dies, and any API process can find it (to cancel it) by name. Training runs in a
thread started by the constructor: when Ray restarts the actor after its process died
(``max_restarts``), it runs the constructor again, and the loop resumes from the job's last
checkpoint. The actor opens its own store from the plain values it is given (a worker's
environment need not hold the API's settings).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from app.jobs.events import Done, EpochEvent, Failed, ProgressEvent, Started, WorkerEvent
from app.jobs.store import JobStore
from app.jobs.train import node_info, train

log = logging.getLogger(__name__)
STORE_RETRY_S = 60.0  # a worker waits longer than a request for a database that blips


class JobActor:
    """One job's worker process (see the module docstring)."""

    def __init__(self, job_id: str, payload: dict, data_dir: str, database_url: str | None) -> None:
        import ray

        context = ray.get_runtime_context()
        self.restarted = context.was_current_actor_reconstructed
        node = node_info(context.get_node_id(), ray.util.get_node_ip_address())
        args = (job_id, payload, data_dir, database_url, node, self.restarted)
        threading.Thread(target=_run_then_exit, args=args, name=f"job-{job_id[:8]}", daemon=True).start()

    def ping(self) -> bool:
        return True


def _run_then_exit(*args: Any) -> None:
    import ray

    try:
        run(*args)
    except Exception:  # run() failed the job if the store let it; else the reapers do, once the actor is gone
        log.exception("job actor failed")
    finally:  # done: end this actor for good (Ray would otherwise keep it, or restart it)
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception:  # never linger holding a CPU: a restart finds the job over and ends
            log.exception("job actor could not end itself")
            os._exit(1)


def run(
    job_id: str, payload: dict, data_dir: str, database_url: str | None, node: dict, restarted: bool
) -> None:
    """Train ``payload``, writing each event of job ``job_id`` to the store."""
    store = JobStore(Path(data_dir), database_url, retry_seconds=STORE_RETRY_S, migrate=False)
    try:
        for event in train(payload, node):
            if not record(store, job_id, event, restarted):
                return
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        store.finish(
            job_id, "failed", f"the worker could not record the job: {type(e).__name__}: {first_line}"
        )
        raise
    finally:
        store.close()


def record(store: JobStore, job_id: str, event: WorkerEvent, restarted: bool) -> bool:
    """Write one event; False when the job is over (finished, or cancelled meanwhile)."""
    match event:
        case Started():
            if store.mark_running(job_id, event.device, event.node):  # queued -> running
                if restarted:  # the first attempt died before it could say it had started
                    store.add_restart(job_id, event.node)
                return True
            job = store.get(job_id, with_request=False)
            if not restarted or job is None or job["status"] != "running":
                return False  # cancelled, reaped or finished meanwhile
            store.add_restart(job_id, event.node)
            return True
        case ProgressEvent():
            store.record_progress(job_id, event.progress.model_dump())
            return True
        case EpochEvent():  # idempotent per epoch: a resumed run reports its checkpoint's again
            store.record_epoch(job_id, event.entry.model_dump(), event.progress.model_dump())
            return True
        case Done():
            store.finish(
                job_id, "succeeded", metrics=event.metrics, duration_s=event.duration_s, memory=event.memory
            )
        case Failed():
            store.finish(job_id, "failed", event.error)
    return False
