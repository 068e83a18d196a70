"""Job actors started before their jobs, so that a job posted to a warm service starts at once.

A job's actor (``app.jobs.worker``) is a fresh Ray worker process; started when the job is posted,
it first imports torch, the layers and scikit-learn (5 s of CPU, 10-20 s on a loaded 2-core
machine). Ray prestarts one idle worker per CPU when it starts, but does not refill that pool once
jobs have taken them, and no setting of Ray's makes it (measured: bench/README.md, "Job start").
So each API process keeps ``MB_WARM_WORKERS`` job actors started ahead, idle: a ``WarmJobActor``
is named by the id its job will get, and its job comes later, by ``claim``. Claimed, it is that
job's actor in every way: detached, found by name, restarted by Ray if its process dies (it then
reads its job's payload back from the job's directory, ``payload.json``, and resumes from the
checkpoint), ended when the job is.

A warm actor holds what a job of the usual shape needs (1 CPU, no GPU,
``MB_WARM_WORKER_MEMORY_BYTES``), so a job takes one only if it fits; any other starts an actor
of its own, as before. Unclaimed, it must not keep room from jobs:
- the pool starts one only where Ray has room for it;
- a job that waits for room (queued, or its worker restarting) retires one (``make_room``, from
  any API process, called by the reaper);
- one whose API no longer renews it (the API stopped or died) ends itself after ``LEASE_S``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import settings
from app.jobs import ray_runtime
from app.jobs.worker import MAX_CONCURRENCY, JobActor, _end_self

log = logging.getLogger(__name__)
POLL_S = 1.0  # the pool's keeper looks after its actors this often
RENEW_S = 5.0  # and renews their lease this often
LEASE_S = 30.0  # an unclaimed warm actor whose lease was not renewed for this long ends itself
CALL_S = 30.0  # a claim or a retirement answers within this (a busy machine)
NAME_FREE_S = 10.0  # a killed actor's name is free again within this


def payload_path(data_dir: str, job_id: str) -> Path:
    """Where a claimed warm actor keeps its job's payload: the job's own directory."""
    return Path(data_dir) / "jobs" / job_id / "payload.json"


class WarmJobActor(JobActor):
    """A job's actor started before its job (see the module docstring)."""

    def __init__(
        self,
        job_id: str,
        data_dir: str,
        database_url: str | None,
        store_retry_s: float,
        lease_s: float = LEASE_S,
    ) -> None:
        self._job = (job_id, data_dir, database_url, store_retry_s)
        self._lock = threading.Lock()
        self._lease_s, self._renewed = lease_s, time.monotonic()
        path = payload_path(data_dir, job_id)
        self._taken = path.exists()  # claimed or retired: no claim from now on
        if self._taken:  # Ray restarted it after its claim: the job resumes
            super().__init__(job_id, json.loads(path.read_text()), data_dir, database_url, store_retry_s)
        else:
            threading.Thread(target=self._expire, name="warm-lease", daemon=True).start()

    def claim(self, payload: dict) -> bool:
        """Run the job of ``payload`` (a job that was not run before); False when too late."""
        with self._lock:
            if self._taken:
                return False
            self._taken = True
        job_id, data_dir, database_url, store_retry_s = self._job
        path = payload_path(data_dir, job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".payload.{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)  # before the run: a restart must find it
        self._start(job_id, payload, data_dir, database_url, store_retry_s, restarted=False)
        return True

    def renew(self) -> bool:
        """Keep this actor for its API a while longer; whether it is still unclaimed."""
        self._renewed = time.monotonic()
        return not self._taken

    def retire(self) -> bool:
        """End this actor if it is still unclaimed (its room goes to a waiting job); whether it does."""
        with self._lock:
            if self._taken:
                return False
            self._taken = True
        threading.Timer(0.1, _end_self).start()  # once this call has answered
        return True

    def _expire(self) -> None:
        while not self._taken:
            time.sleep(1.0)
            if time.monotonic() - self._renewed > self._lease_s and self.retire():
                log.warning("warm job actor %s: its API stopped renewing it; ending", self._job[0])


@dataclass
class Warm:
    """The pool's view of one of its warm actors."""

    handle: Any
    probe: Any  # its latest ``renew`` call: answered, the actor is up and idle
    ready: bool = False
    renewed: float = 0.0


class WarmPool:
    """This API process's warm job actors, kept by a thread (``start``) while Ray is up."""

    def __init__(self) -> None:
        self.size = settings.warm_workers
        self.memory = settings.warm_worker_memory_bytes
        self._warm: dict[str, Warm] = {}  # job id -> warm actor
        self._set_aside: dict[str, Any] = {}  # job id -> handle, taken by a job being submitted
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_ready = self.size == 0

    def start(self) -> None:
        if self._thread is None and self.size > 0:
            self._thread = threading.Thread(target=self._keep, name="warm-pool", daemon=True)
            self._thread.start()

    def ready(self) -> bool:
        """Whether a job posted now starts at once as far as this pool goes: a warm actor was up
        (taken by jobs since, maybe), or none is wanted (``MB_WARM_WORKERS=0``, or no room)."""
        return self._was_ready

    def idle(self) -> int:
        """How many warm actors wait for a job, up and idle."""
        with self._lock:
            return sum(warm.ready for warm in self._warm.values())

    def take(self, num_gpus: int, memory: int | None) -> str | None:
        """The job id of a warm actor for a job of this shape, set aside for ``claim``; or None."""
        if num_gpus or (memory or 0) > self.memory:
            return None
        with self._lock:
            job_id = next((job_id for job_id, warm in self._warm.items() if warm.ready), None)
            if job_id is not None:
                self._set_aside[job_id] = self._warm.pop(job_id).handle
        return job_id

    def claim(self, job_id: str, payload: dict) -> bool:
        """Hand ``payload`` to the warm actor taken as ``job_id``; False when ``job_id`` is not
        one, or it could not take the job (then it is ended, and its name free for an actor of
        the job's own)."""
        with self._lock:
            handle = self._set_aside.pop(job_id, None)
        if handle is None:
            return False
        import ray

        try:
            if ray.get(handle.claim.remote(payload), timeout=CALL_S):
                return True
        except (ray.exceptions.RayError, TimeoutError) as e:
            log.warning("warm job actor %s could not take its job: %s", job_id, e)
        name = ray_runtime.actor_name(job_id)
        ray_runtime.kill_actor(name)
        deadline = time.monotonic() + NAME_FREE_S
        while ray_runtime.find_actor(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        return False

    def make_room(self) -> None:
        """Retire one unclaimed warm actor, this process's or another's, if Ray has no CPU free
        (a job waits for one)."""
        if not ray_runtime.started() or ray_runtime.room_for(1) >= 1:
            return
        with self._lock:  # the least advanced of ours first
            job_id = min(self._warm, key=lambda j: self._warm[j].ready, default=None)
            warm = self._warm.pop(job_id) if job_id is not None else None
        if warm is not None:
            ray_runtime.kill_actor(ray_runtime.actor_name(job_id))
            log.info("retired warm job actor %s: a job waits for room", job_id)
            return
        self._retire_anothers()

    def _retire_anothers(self) -> None:
        import ray

        for name in ray_runtime.named_actors():
            handle = ray_runtime.find_actor(name)
            if handle is None or not hasattr(handle, "retire"):
                continue  # gone meanwhile, or a job's own actor
            try:
                if ray.get(handle.retire.remote(), timeout=CALL_S):
                    log.info("retired warm job actor %s of another API process: a job waits", name)
                    return
            except (ray.exceptions.RayError, TimeoutError):
                continue

    def close(self) -> None:
        """Stop keeping the pool, and end its unclaimed actors (they would hold room for a lease)."""
        self._stop.set()
        with self._lock:
            ended, self._warm = list(self._warm), {}
        for job_id in ended:
            try:
                ray_runtime.kill_actor(ray_runtime.actor_name(job_id))
            except Exception:  # Ray is down: their leases lapse
                log.warning("could not end warm job actor %s", job_id)

    def _keep(self) -> None:
        while not self._stop.wait(POLL_S * random.uniform(0.5, 1.5)):  # processes' rounds drift apart
            try:
                if ray_runtime.started() and ray_runtime.alive():
                    self._tend()
            except Exception:
                log.exception("keeping the warm job actors failed; trying again")

    def _tend(self) -> None:
        import ray

        now = time.monotonic()
        with self._lock:
            warm = list(self._warm.items())
        for job_id, actor in warm:
            done, _ = ray.wait([actor.probe], timeout=0)
            if not done:
                continue
            try:
                alive = ray.get(actor.probe)
            except ray.exceptions.RayError:
                alive = False
            if not alive:  # died, retired by another process, or ended by its lease
                with self._lock:
                    self._warm.pop(job_id, None)
                continue
            actor.ready = self._was_ready = True
            if now - actor.renewed > RENEW_S:
                actor.probe, actor.renewed = actor.handle.renew.remote(), now
        self._fill()

    def _fill(self) -> None:
        """Start one more warm actor if one is missing and Ray has room for it: one a round, so
        that API processes filling theirs at once see each other's (Ray counts one once placed)."""
        with self._lock:
            missing = self.size > len(self._warm)
            starting = any(not warm.ready for warm in self._warm.values())
        if not missing:
            return
        if ray_runtime.room_for(self.memory) >= 1:
            self._add()
        elif not starting:
            self._was_ready = True  # no room for one: jobs hold it all; they start as room frees

    def _add(self) -> None:
        job_id = uuid.uuid4().hex
        data_dir = str(settings.data_dir.resolve())
        url = settings.database_url.get_secret_value() if settings.database_url else None
        handle = ray_runtime.start_actor(
            WarmJobActor,
            ray_runtime.actor_name(job_id),
            (job_id, data_dir, url, settings.worker_db_retry_seconds),
            num_gpus=0,
            max_restarts=settings.max_restarts,
            memory=self.memory,
            max_concurrency=MAX_CONCURRENCY,
        )
        with self._lock:
            self._warm[job_id] = Warm(handle, handle.renew.remote(), renewed=time.monotonic())
