"""Stops an embedded Ray that nobody uses: one small process beside each embedded Ray.

The embedded Ray outlives the API by design (its jobs must survive an API that dies). Left alone
it would stay for ever, dozens of processes and gigabytes, after ``make run`` and Ctrl-C. This
process (started by ``app.jobs.ray_runtime`` with the Ray head, in a session of its own) asks the
Ray's control store every few seconds whether an API is attached (a live driver) and whether any
job's actor lives (queued, running, restarting, or holding weights for an API to collect). Once
neither has been so for ``MB_EMBEDDED_RAY_IDLE_SECONDS`` it stops that Ray, and only it, then
exits. It starts counting once an API has attached (or after ``START_GRACE_S`` if none ever does).

Its command line names the Ray's temp dir, so that ``ray_runtime.stop_embedded`` (``make
stop-ray``) finds it, and stops it, with the Ray it watches.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
START_GRACE_S = 120.0  # a Ray that no API joins within this (its API died starting it) counts as idle
CALL_S = 5.0  # one question to the control store


def start(address: str, data_dir: Path, idle_s: float, env: Mapping[str, str]) -> None:
    """Start the watcher of the embedded Ray at ``address`` (not waiting for it)."""
    from app.jobs.ray_runtime import embedded_dir, embedded_temp_dir

    command = [
        sys.executable, "-m", "app.jobs.ray_idle", f"--address={address}",
        f"--data-dir={data_dir.resolve()}", f"--idle-seconds={idle_s}",
        f"--temp-dir={embedded_temp_dir(data_dir)}",
    ]  # fmt: skip
    with open(embedded_dir(data_dir) / "ray-idle.log", "ab") as out:
        subprocess.Popen(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def usage(gcs: Any) -> tuple[bool, bool]:
    """``(an API is attached, a job's actor lives)``, as the control store ``gcs`` says."""
    from ray.core.generated.gcs_pb2 import ActorTableData

    async def all_actors() -> dict:
        return await gcs.async_get_all_actor_info(timeout=CALL_S)  # (no synchronous form)

    jobs = gcs.get_all_job_info(
        skip_submission_job_info_field=True, skip_is_running_tasks_field=True, timeout=CALL_S
    )
    actors = asyncio.run(all_actors())
    attached = any(not job.is_dead for job in jobs.values())
    return attached, any(actor.state != ActorTableData.DEAD for actor in actors.values())


def watch(address: str, data_dir: Path, idle_s: float) -> None:
    """Poll until the Ray at ``address`` has been unused for ``idle_s``; then stop it."""
    from ray._raylet import GcsClient

    from app.jobs.ray_runtime import stop_embedded

    started, seen_api, idle_since = time.monotonic(), False, None
    every_s = max(0.5, min(10.0, idle_s / 10))
    gcs = None
    while True:
        try:
            gcs = gcs or GcsClient(address=address)
            attached, active = usage(gcs)
        except Exception as e:  # its control store does not answer: nothing can use this Ray
            if gcs is not None:
                log.info("the control store at %s does not answer: %s", address, e)
            gcs, attached, active = None, False, False
        now = time.monotonic()
        seen_api = seen_api or attached
        counting = seen_api or now - started > START_GRACE_S
        idle_since = (idle_since or now) if counting and not (attached or active) else None
        if idle_since is not None and now - idle_since >= idle_s:
            break
        time.sleep(every_s)
    killed = stop_embedded(data_dir)
    log.warning(
        "stopped the embedded Ray at %s (%d processes): no API and no job for %g s", address, killed, idle_s
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--idle-seconds", required=True, type=float)
    parser.add_argument("--temp-dir", required=True, help="the watched Ray's (names this process as its)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {os.getpid()} %(message)s")
    watch(args.address, args.data_dir, args.idle_seconds)


if __name__ == "__main__":
    main()
