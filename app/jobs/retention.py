"""What is stored with a job besides its row: its files, removed with it; and the retention
that deletes old finished jobs (``MB_JOB_RETENTION_DAYS``) from every API process, hourly."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from app.core.config import settings
from app.jobs.store import JobStore, StoreUnavailable

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0
FIRST_PRUNE_S = 30.0  # after start-up, out of its way
DELETING = ".deleting-"  # a job directory moved aside, being removed


def job_dir(job_id: str) -> Path:
    """The job's artifact directory, ``MB_DATA_DIR/jobs/<id>/`` (checkpoints, weights)."""
    root = (settings.data_dir / "jobs").resolve()
    path = (root / job_id).resolve()
    if path.parent != root:  # ids come from the store, but never leave the jobs directory
        raise ValueError(f"not a job id: {job_id!r}")
    return path


def _skip_gone(function: Callable[..., object], path: str, exc_info: tuple) -> None:
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def remove_job_files(job_id: str) -> None:
    """Delete the job's directory; what another DELETE (or the retention) removes at the same
    time is skipped, not an error.

    The directory is first moved aside, in one rename: a read racing the DELETE finds all of the
    job's files or none (``being_deleted``), never a half-removed directory. What a killed process
    left aside is removed by the next ``prune``."""
    directory = job_dir(job_id)
    aside = directory.with_name(f"{DELETING}{job_id}-{uuid.uuid4().hex[:8]}")
    try:
        directory.rename(aside)
    except FileNotFoundError:
        return  # never had files, or another DELETE moved them aside
    except OSError:  # it cannot move (a mount point, say): removed where it is
        aside = directory
    shutil.rmtree(aside, onerror=_skip_gone)


def being_deleted(job_id: str) -> bool:
    """Whether the job's files are gone: a DELETE (or the retention) is removing the job."""
    return not job_dir(job_id).exists()


def prune(store: JobStore, retention_days: float, now: float | None = None) -> list[str]:
    """Delete the jobs that finished more than ``retention_days`` ago, with their events and files;
    their ids. Safe in several processes at once (a job already deleted is skipped). A job whose
    files cannot be removed (a read-only directory) is kept, with a warning, for the next pass;
    the others are deleted."""
    for aside in (settings.data_dir / "jobs").glob(f"{DELETING}*"):  # left by a process killed mid-DELETE
        try:
            shutil.rmtree(aside, onerror=_skip_gone)
        except OSError as e:
            log.warning("could not remove %s, the files of a deleted job: %s", aside, e)
    if retention_days <= 0:
        return []
    before = (time.time() if now is None else now) - retention_days * 86400
    deleted: list[str] = []
    while ids := store.finished_before(before):
        kept = 0
        for job_id in ids:
            try:
                remove_job_files(job_id)
            except OSError as e:
                log.warning("could not remove the files of old job %s: %s; keeping it", job_id, e)
                kept += 1
                continue
            if store.delete(job_id):
                deleted.append(job_id)
        if len(ids) < 500 or kept == len(ids):  # a page of kept jobs only: the next pass tries them
            break
    return deleted


@asynccontextmanager
async def pruning(store: JobStore) -> AsyncIterator[None]:
    """Prune in the background while the app runs."""
    task = asyncio.create_task(_prune_forever(store))
    try:
        yield
    finally:
        task.cancel()


async def _prune_forever(store: JobStore) -> None:
    await asyncio.sleep(FIRST_PRUNE_S)
    while True:
        try:
            deleted = await run_in_threadpool(prune, store, settings.job_retention_days)
            if deleted:
                days = settings.job_retention_days
                log.info("deleted %d jobs that finished over %g days ago", len(deleted), days)
        except (StoreUnavailable, OSError) as e:
            log.warning("could not prune old jobs: %s", e)
        await asyncio.sleep(PRUNE_EVERY_S)
