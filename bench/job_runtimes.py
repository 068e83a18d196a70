"""How a job can outlive the API on Ray: a detached actor per job (what the service does) against
one supervisor actor that starts a task per job. Measured on this data directory's embedded Ray:

- start: from the call to the job's code running (a file it writes), median of ``--runs``;
- survives: whether a supervised task lives on when its supervisor is killed (``kill -9``). (A
  detached actor outliving the API that started it is what tests/test_jobs_restart.py checks.)

Ray's job submission API is the third option; it needs ``ray[default]`` (the dashboard's HTTP
server and aiohttp), which this project does not install, so it is described, not measured.

    .venv/bin/python bench/job_runtimes.py --runs 3      # about a minute, most of it Ray's start
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import settings  # noqa: E402
from app.jobs import ray_runtime  # noqa: E402


class Job:
    """Stands for a job's worker: writes its pid, then sleeps (a long training run)."""

    def __init__(self, marker: str) -> None:
        Path(marker).write_text(str(os.getpid()))

    def pid(self) -> int:
        return os.getpid()


def job_task(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(600)


class Supervisor:
    """One long-lived actor that starts each job as a task it owns."""

    def __init__(self) -> None:
        self.refs: list = []

    def start(self, marker: str) -> int:
        import ray

        self.refs.append(ray.remote(job_task).options(num_cpus=0).remote(marker))
        return os.getpid()


def wait_file(path: Path, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return time.monotonic()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    settings.data_dir = tmp / "data"
    settings.ray_num_cpus = 2 * args.runs  # logical: the stand-in jobs only sleep
    ray_runtime.ensure_ray()  # before importing ray: it reads the loopback switch at import
    import ray

    try:
        actor_s, task_s = [], []
        for i in range(args.runs):
            marker = tmp / f"actor-{i}"
            start = time.monotonic()
            ray_runtime.start_actor(Job, f"bench-{i}", (str(marker),), num_gpus=0, max_restarts=0)
            actor_s.append(wait_file(marker) - start)
        supervisor = (
            ray.remote(Supervisor).options(num_cpus=0, lifetime="detached", name="bench-sup").remote()
        )
        supervisor_pid = ray.get(supervisor.start.remote(str(tmp / "warm")))
        wait_file(tmp / "warm")
        for i in range(args.runs):
            marker = tmp / f"task-{i}"
            start = time.monotonic()
            ray.get(supervisor.start.remote(str(marker)))
            task_s.append(wait_file(marker) - start)

        # Kill the supervisor: do its tasks live on?
        task_pids = [int((tmp / f"task-{i}").read_text()) for i in range(args.runs)]
        os.kill(supervisor_pid, signal.SIGKILL)
        time.sleep(5)
        tasks_alive = sum(alive(pid) for pid in task_pids)
        print(f"command: .venv/bin/python bench/job_runtimes.py --runs {args.runs}")
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"detached actor per job: start {statistics.median(actor_s):.2f} s (median)")
        print(f"task per job owned by a supervisor actor: start {statistics.median(task_s):.2f} s (median)")
        print(f"  tasks alive 5 s after kill -9 of the supervisor: {tasks_alive} of {args.runs}")
    finally:
        ray_runtime.stop_embedded(settings.data_dir)


if __name__ == "__main__":
    main()
