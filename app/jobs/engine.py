"""Starts jobs as detached Ray actors, cancels them by name, and reaps the ones that went astray.

Each job is one detached, named actor (``app.jobs.worker.JobActor``) that trains and writes its
own events to the store, so a job outlives the API process that started it, and any API process
serves, follows (from the store) and cancels (by actor name) any job. Ray restarts an actor
whose process died (``MB_MAX_RESTARTS``); it resumes from its last checkpoint.

A successful run's result (metrics, the weights' bytes) comes back through Ray: the submitting
process watches for it, every process's reaper polls for it (``app.jobs.collect``), and the
process that stores it finishes the job.

A reaper in every API process fails, with a clear reason, a job that is active but should not
be: its actor is gone (its node died, Ray was restarted, it died too often), it ran past its
time limit plus a grace period, or it waited longer than ``MB_MAX_QUEUE_SECONDS`` for a worker.
Each verdict is a conditional update in the store, so of several API processes one acts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.core.config import settings
from app.jobs import ray_runtime
from app.jobs.collect import Collector
from app.jobs.domain import TERMINAL, Job, JobStatus
from app.jobs.plan import JobPlan
from app.jobs.retention import pruning, remove_job_files
from app.jobs.store import JobStore, StoreNotWritable, StoreUnavailable
from app.jobs.train import TrainPayload
from app.jobs.warm_pool import WarmPool
from app.jobs.worker import MAX_CONCURRENCY, JobActor
from app.schemas.jobs import JobCreate
from layers.language.errors import SpecError

log = logging.getLogger(__name__)
KILL_GRACE_S = 5.0  # past its limit a job gets this long to stop by itself before it is reaped
START_GRACE_S = 30.0  # a job younger than this may have its row but not yet its actor
REAP_EVERY_S = 5.0
WAITING = ("DEPENDENCIES_UNREADY", "PENDING_CREATION", "RESTARTING")  # actor states without a worker


class QueueFull(Exception):
    """Too many jobs queued or running; the client should retry later."""


class BackendDown(Exception):
    """Ray cannot be started or does not answer; the client should retry later."""


class JobEngine:
    """Submits, reads, cancels and deletes jobs, and runs this process's reaper; owns the job
    store, which the routes reach only through it."""

    def __init__(self, store: JobStore) -> None:
        self.store = store  # not touched here: the API starts even with the database down
        self.collector = Collector(store)
        self.pool = WarmPool()  # job actors started ahead (started with the reaper)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._waiting_since: dict[str, float] = {}  # job id -> when this reaper first saw it without a worker

    def start_ray(self) -> None:
        try:
            ray_runtime.ensure_ray()
        except Exception as e:
            raise BackendDown(f"could not start or join Ray: {type(e).__name__}: {e}") from e
        if not ray_runtime.alive():
            raise BackendDown("Ray does not answer; see GET /readyz")

    def start_reaper(self) -> None:
        """Reap in the background from now on (time limits apply even while Ray is down)."""
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap_forever, name="job-reaper", daemon=True)
                self._reaper.start()
                self.pool.start()

    def check_device(self, device: str) -> int:
        """GPUs the job should ask Ray for; ``SpecError`` when ``cuda`` is asked of a GPU-less cluster."""
        self.start_ray()
        gpus = ray_runtime.gpu_count()
        if device == "cuda" and gpus < 1:
            raise SpecError(
                ("device",),
                "device 'cuda' was asked for but the Ray cluster has no GPU; use 'auto' or 'cpu'",
                {"cluster_gpus": gpus},
            )
        return 1 if device == "cuda" or (device == "auto" and gpus >= 1) else 0

    def submit(self, job: JobCreate, plan: JobPlan, owner: str | None = None) -> Job:
        """Store and start a job: the job as queued (a fast worker may already run it).

        Raises ``SpecError`` (device), ``QueueFull``, ``BackendDown`` or ``StoreUnavailable``.
        """
        self._check_room()  # first: a full queue or a database that is down never touches Ray
        num_gpus = self.check_device(job.device)
        with self._lock:  # per process; several processes may overshoot the limit by one each
            self._check_room()
            job_id = self._new_job_id(num_gpus, plan.payload.memory_allowance_bytes)
            request, memory = job.model_dump(mode="json"), plan.memory_estimate_bytes
            self.store.create(job_id, request, memory, owner=owner, time_limit_s=job.time_limit_s)
            queued = self.store.get(job_id)
            try:
                self._start_actor(job_id, plan.payload, num_gpus)
            except Exception as e:  # the row must not hold a slot for a job that never started
                self._forget(job_id)
                raise BackendDown(f"could not start the job on Ray: {type(e).__name__}: {e}") from e
        self.collector.watch(job_id)
        return queued

    def _new_job_id(self, num_gpus: int, memory: int | None) -> str:
        """A warm actor's id when one fits the job (it then starts at once), else a new one."""
        return self.pool.take(num_gpus, memory) or uuid.uuid4().hex

    def _check_room(self) -> None:
        if self.store.count_active() >= settings.max_queued_jobs:
            raise QueueFull(f"{settings.max_queued_jobs} jobs are already queued or running")

    def _start_actor(self, job_id: str, payload: TrainPayload, num_gpus: int) -> None:
        data_dir = settings.data_dir.resolve()
        payload = payload.model_copy(
            update={"job_id": job_id, "artifact_dir": str(data_dir / "jobs" / job_id)}
        )
        if self.pool.claim(job_id, payload.model_dump(mode="json")):
            return  # a warm actor took it
        self.pool.make_room()  # an actor of its own: warm ones may hold the room it needs
        url = settings.database_url.get_secret_value() if settings.database_url else None
        ray_runtime.start_actor(
            JobActor,
            ray_runtime.actor_name(job_id),
            (job_id, payload.model_dump(mode="json"), str(data_dir), url, settings.worker_db_retry_seconds),
            num_gpus=num_gpus,
            max_restarts=settings.max_restarts,
            memory=payload.memory_allowance_bytes,  # the allowance the worker holds it to
            max_concurrency=MAX_CONCURRENCY,
        )

    def _forget(self, job_id: str) -> None:
        try:
            self.store.finish(job_id, JobStatus.FAILED, "the job could not be started on Ray")
            self.store.delete(job_id)
        except Exception:  # the store is down too: the reaper fails the row once START_GRACE_S is past
            log.exception("could not remove job %s after Ray refused it", job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job (its actor is killed at once); False when it had finished."""
        if not self.store.finish(job_id, JobStatus.CANCELLED, "cancelled by request"):
            return False
        self._kill(job_id)
        return True

    def _kill(self, job_id: str) -> None:
        try:
            ray_runtime.ensure_ray()
            ray_runtime.kill_actor(ray_runtime.actor_name(job_id))
        except Exception:  # the job is already finished in the store; its writes are refused
            log.exception("could not kill the actor of job %s", job_id)

    # Reads and deletes: the routes' way to the store.

    def job(self, job_id: str, *, with_request: bool = True, owner: str | None = None) -> Job | None:
        """The job (only ``owner``'s, when given: another's is not even read); None when there is
        none. Failed, with its reason, if this process knows so though the store does not yet."""
        job = self.store.get(job_id, with_request=with_request, owner=owner)
        return None if job is None else self.collector.known(job)

    def jobs(self, offset: int, limit: int, owner: str | None = None) -> tuple[list[Job], int]:
        """A page of jobs (of ``owner`` when given), newest first, without requests; and their count."""
        jobs, count = self.store.list(offset, limit, owner)
        return [self.collector.known(job) for job in jobs], count

    def events_after(self, job_id: str, seq: int) -> list[tuple[int, str, dict]]:
        """The job's events after number ``seq``: ``(seq, kind, data)``, oldest first."""
        return self.store.events_after(job_id, seq)

    def delete(self, job: Job) -> bool:
        """Delete a finished job with its files and events; False when it was already gone.
        ``StoreNotWritable`` when its files cannot be removed (a read-only data directory)."""
        assert job.status in TERMINAL
        if self.collector.holds(job.id):  # failed as far as this process knows: stored first
            self.collector.poll(job.id)
        try:
            remove_job_files(job.id)  # files first: a failure leaves the job listed, to delete again
        except OSError as e:
            data_dir = f"MB_DATA_DIR {settings.data_dir.resolve()}"
            raise StoreNotWritable(data_dir, f"{type(e).__name__}: {e}") from e
        return self.store.delete(job.id)

    def ping(self) -> str:
        """The store's database in words, once it answered a read and took a write;
        ``StoreUnavailable`` when it does not answer, ``StoreNotWritable`` when it refuses writes."""
        self.store.ping()
        self.store.check_writable()
        return self.store.database

    def close(self) -> None:
        """Stop this process's reaper. Jobs keep running: they belong to Ray, not to this process."""
        self._stop.set()
        self.collector.close()
        self.pool.close()
        if self._reaper is not None:
            self._reaper.join(timeout=2 * REAP_EVERY_S)
        self.store.close()

    def _reap_forever(self) -> None:
        while not self._stop.wait(REAP_EVERY_S * random.uniform(0.8, 1.2)):  # replicas spread out
            try:
                self.reap()
            except StoreUnavailable as e:  # /readyz and the routes report it; try again later
                log.warning("the job reaper could not use the store: %s", e)
            except Exception:
                log.exception("the job reaper failed; it tries again")

    def reap(self, now: float | None = None) -> list[str]:
        """Collect every running job whose run has succeeded, and fail every active job that should
        not be; the ids this process failed."""
        now = time.time() if now is None else now
        ray_up = ray_runtime.started() and ray_runtime.alive()
        failed, waiting = [], {}
        for job in self.store.active():
            name = ray_runtime.actor_name(job.id)
            state = ray_runtime.actor_state(name) if ray_up else "UNKNOWN"
            if (state == "ALIVE" or self.collector.holds(job.id)) and self.collector.poll(job.id):
                continue  # its run is over (a run that ends after its limit, but before the reaper, counts)
            if state in WAITING:
                waiting[job.id] = self._waiting_since.get(job.id, now)
            reason = verdict(job, state, waiting.get(job.id), now)
            if reason is not None and self.store.finish(job.id, JobStatus.FAILED, reason):
                log.warning("job %s failed by the reaper: %s", job.id, reason)
                failed.append(job.id)
                if ray_up and state is not None:
                    ray_runtime.kill_actor(name)
        self._waiting_since = waiting
        if waiting:
            self.pool.make_room()  # a job waits for room that a warm actor may hold
        return failed


def verdict(job: Job, actor: str | None, waiting_since: float | None, now: float) -> str | None:
    """Why an active ``job`` must fail, or None. ``actor``: its actor's state, None when it has no
    live actor; ``waiting_since``: since when its actor has been waiting for a worker."""
    limit = job.time_limit_s or settings.max_job_seconds
    if job.started_at is not None and now > job.started_at + limit + KILL_GRACE_S:
        return f"timed out: the job ran past its {limit:g} s limit and was killed"
    if actor is None:
        if now - job.created_at > START_GRACE_S:
            return (
                "the job's worker is gone: the Ray node running it died, Ray was restarted, or the "
                f"worker died more than MB_MAX_RESTARTS ({settings.max_restarts}) times"
            )
        return None
    if job.status == JobStatus.QUEUED and now - job.created_at > settings.max_queue_seconds:
        return (
            f"no worker took the job within MB_MAX_QUEUE_SECONDS ({settings.max_queue_seconds:g} s): "
            "the cluster had no room for it (busy, or without the CPU or GPU it asks for)"
        )
    if (
        job.status == JobStatus.RUNNING
        and waiting_since is not None
        and now - waiting_since > settings.max_queue_seconds
    ):
        return (
            f"the job's worker died and was not restarted within MB_MAX_QUEUE_SECONDS "
            f"({settings.max_queue_seconds:g} s): no node had room for it"
        )
    return None


@asynccontextmanager
async def jobs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the job store, start this process's reaper and retention and, if eager, start or join
    Ray; on the way out, stop a start of the embedded Ray still under way."""
    engine = JobEngine(JobStore.from_settings())
    app.state.jobs = engine
    engine.start_reaper()
    if settings.ray_eager_start:
        threading.Thread(target=_start_quietly, args=(engine,), name="ray-start", daemon=True).start()
    try:
        async with pruning(engine.store):
            yield
    finally:
        active = _active_jobs(engine)
        engine.close()
        ray_runtime.leave(active)  # says, in one line, what stays of Ray and for how long


def _active_jobs(engine: JobEngine) -> int | None:
    try:
        return engine.store.count_active()
    except StoreUnavailable:
        return None


def _start_quietly(engine: JobEngine) -> None:
    try:
        engine.start_ray()
    except Exception:  # readiness reports it; the first job retries the start
        log.exception("could not start Ray")
