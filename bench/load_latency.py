"""Latency of the routes that do not trace while summaries load the API: the figures that
``tests/test_load.py`` prints but no longer asserts (a timed assertion is a benchmark in the wrong
place). The test's own loads, on the test's own server (uvicorn on loopback, embedded Ray):

- ``/healthz`` probed every 0.1 s while 16 clients send 240 mixed summaries and 6 jobs run;
- ``/readyz``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}`` and a finished job's SSE stream probed in
  turn while 120 slow summaries wait for the 2 trace slots.

Reported: p50, p99 and max per route, with the load average before and after (the machine is
often shared: quote a figure only with its load).

    .venv/bin/python bench/load_latency.py        # 2-4 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import running_server  # noqa: E402
from test_load import (  # noqa: E402
    JOBS,
    QUEUED_SUMMARIES,
    job_deadline,
    load,
    percentile,
    queued_summaries_and_probes,
    server_env,
    time_one_job,
)

from app.jobs import ray_runtime  # noqa: E402


def row(name: str, times: list[float]) -> str:
    ms = [percentile(times, q) * 1000 for q in (0.5, 0.99, 1.0)]
    return f"| {name} | {len(times)} | {ms[0]:.0f} ms | {ms[1]:.0f} ms | {ms[2]:.0f} ms |"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"command: .venv/bin/python bench/load_latency.py; load average {os.getloadavg()}")
    data_dir = Path(tempfile.mkdtemp(prefix="load-latency-"))
    try:
        with running_server(server_env(data_dir), args=("--log-level", "warning")) as (url, proc):
            calibration = asyncio.run(time_one_job(url))
            mixed = asyncio.run(load(url, proc.pid, job_deadline(calibration, JOBS)))
            statuses, queued = asyncio.run(queued_summaries_and_probes(url, job_deadline(calibration, 1)))
    finally:
        ray_runtime.stop_embedded(data_dir)
    errors = sum(got >= 500 for _, got in mixed["statuses"]) + sum(s >= 500 for s in statuses)
    print(f"one job alone: {calibration:.1f} s; 5xx: {errors}; load average after {os.getloadavg()}")
    print("| route | probes | p50 | p99 | max |\n|---|---|---|---|---|")
    print(row(f"/healthz, {len(mixed['statuses'])} mixed summaries and {JOBS} jobs", mixed["health"]))
    for name, times in queued.items():
        print(row(f"{name}, {QUEUED_SUMMARIES} summaries queued", times))
    print(row(f"all four, {QUEUED_SUMMARIES} summaries queued", [t for ts in queued.values() for t in ts]))


if __name__ == "__main__":
    main()
