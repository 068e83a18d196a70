"""From a job's POST to its first training step, as a user of a fresh service sees it.

For each ``--warm`` value (``MB_WARM_WORKERS``; 0 is the service without warm job actors: each job
starts a Ray worker of its own), a fresh API (uvicorn on loopback, its own embedded Ray with
``--cpus`` CPUs, ``MB_PROGRESS_EVERY_STEPS=1``) is started on a new data directory, and:

- **first after start**: the API process is started, ``/readyz`` is polled until Ray is ``up``
  (timed: *ready after*), then one job is posted;
- **one at a time**: ``--jobs`` jobs, each posted once the previous one has ended and the
  service is warm again (``/readyz``'s ``warm_workers`` back to ``--warm``; that wait is
  reported too: the refill);
- **N at once**: ``--jobs`` jobs in batches of ``--at-once`` posted together, each batch once the
  previous one has ended and the service is warm again.

A job's *start* is the time from sending its POST to the first poll (every 20 ms) of
``GET /v1/jobs/{id}`` that shows step 1 done. Jobs: the digits MLP, one epoch, CPU. The load
average is printed before and after: quote a figure only with it.

    .venv/bin/python bench/job_start.py --warm 0 4 --cpus 4 --jobs 10 --at-once 4   # ~10 min
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import clean_env, start_server, stop, wait_for  # noqa: E402

from app.examples import DIGITS_MLP, digits_job  # noqa: E402
from app.jobs import ray_runtime  # noqa: E402

JOB = digits_job(DIGITS_MLP, optimizer={"type": "Adam", "lr": 0.01}, epochs=1, batch_size=64, device="cpu")
POLL_S = 0.02
END_S = 600  # a job, or the service's warming up, that takes longer is a failure, not a figure


def start_time(api: httpx.Client, seed: int) -> tuple[str, float]:
    """Post one job: its id and the seconds from the POST to its first step."""
    posted = time.monotonic()
    response = api.post("/v1/jobs", json={**JOB, "seed": seed})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    while time.monotonic() - posted < END_S:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if (job["progress"] or {}).get("step", 0) >= 1:
            return job_id, time.monotonic() - posted
        assert job["status"] in ("queued", "running"), job
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} did not take a step within {END_S} s")


def wait_ended(api: httpx.Client, job_ids: list[str]) -> None:
    def ended() -> bool:
        return all(api.get(f"/v1/jobs/{j}").json()["status"] not in ("queued", "running") for j in job_ids)

    wait_for("the jobs to end", ended, END_S, 0.1)


def wait_warm(api: httpx.Client, warm: int) -> float:
    """Until the service is warm again (``warm`` warm job actors idle): the seconds it took."""
    started = time.monotonic()
    wait_for("the service to be warm", lambda: api.get("/readyz").json()["warm_workers"] >= warm, END_S, 0.1)
    return time.monotonic() - started


def batches(api: httpx.Client, warm: int, jobs: int, at_once: int) -> tuple[list[float], list[float]]:
    """``jobs`` jobs, ``at_once`` at a time: each one's start, and each refill's wait."""
    starts, refills = [], []
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        for first in range(0, jobs, at_once):
            refills.append(wait_warm(api, min(warm, at_once)))
            seeds = range(first, min(jobs, first + at_once))
            results = list(pool.map(lambda seed: start_time(api, seed), seeds))
            starts += [seconds for _, seconds in results]
            wait_ended(api, [job_id for job_id, _ in results])
    return starts, refills


def run(warm: int, cpus: int, jobs: int, at_once: int) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="job-start-"))
    env = clean_env(
        MB_DATA_DIR=str(data_dir),
        MB_RAY_NUM_CPUS=str(cpus),
        MB_WARM_WORKERS=str(warm),
        MB_PROGRESS_EVERY_STEPS="1",
        MB_MAX_QUEUED_JOBS=str(max(16, at_once)),
    )
    launched = time.monotonic()
    proc, url = start_server(env, args=("--log-level", "warning"), log=data_dir / "api.log")
    try:
        api = httpx.Client(base_url=url, timeout=60)
        wait_for("the API and its Ray", lambda: api.get("/readyz").json()["ray"] == "up", END_S, 0.1)
        ready_after = time.monotonic() - launched
        _, first = start_time(api, 0)
        one, one_refills = batches(api, warm, jobs, 1)
        many, many_refills = batches(api, warm, jobs, at_once)
        return {"ready": ready_after, "first": first, "one": one, "one_refill": one_refills,
                "many": many, "many_refill": many_refills}  # fmt: skip
    finally:
        stop(proc)
        ray_runtime.stop_embedded(data_dir)


def spread(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s ({len(times)} jobs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, nargs="+", default=[0, 4], help="MB_WARM_WORKERS, each")
    parser.add_argument("--cpus", type=int, default=4, help="MB_RAY_NUM_CPUS of the embedded Ray")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--at-once", type=int, default=4)
    args = parser.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"command: .venv/bin/python bench/job_start.py {' '.join(sys.argv[1:])}")
    for warm in args.warm:
        print(f"\nMB_WARM_WORKERS={warm}, MB_RAY_NUM_CPUS={args.cpus}: load average {os.getloadavg()}")
        result = run(warm, args.cpus, args.jobs, args.at_once)
        print(f"  ready after {result['ready']:.1f} s; first job after start: {result['first']:.2f} s")
        for way, key in (("one at a time", "one"), (f"{args.at_once} at once", "many")):
            print(f"  {way}: {spread(result[key])}; each: {[round(t, 2) for t in result[key]]}")
            print(f"    refills waited for: {[round(t, 1) for t in result[key + '_refill']]} s")
        print(f"  load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
