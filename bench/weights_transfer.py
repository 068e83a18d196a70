"""How long the API takes to bring a finished job's weights back through Ray and store them.

A stand-in job actor holds a successful run's result (random bytes of each ``--sizes`` MiB, in the
service's own ``Handoff``), and the service's own ``Collector.poll`` does what every API process
does for a running job whose run has ended: ask for the result, fetch the bytes chunk by chunk
through Ray's object store, check their size and sha256, write them atomically under
``MB_DATA_DIR/jobs/<id>/``, finish the job in the store (SQLite), end the actor. Training is left
out; what is timed is the hand-off a job's ``succeeded`` waits for. The API side's memory is the
peak of Python's heap during the hand-off (``tracemalloc``): about one chunk, not the file. (Its
RSS would also count the pages of Ray's shared-memory object store that the chunks were read
from, which are not the process's own.)

    .venv/bin/python bench/weights_transfer.py --sizes 16 256 1024    # about a minute
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from app.core.config import settings  # noqa: E402
from app.jobs import ray_runtime  # noqa: E402
from app.jobs.collect import Collector  # noqa: E402
from app.jobs.domain import JobStatus, Metrics, NodeInfo  # noqa: E402
from app.jobs.events import Done  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.jobs.worker import CHUNK_BYTES, Handoff  # noqa: E402

NODE = NodeInfo(node_id="", ip="127.0.0.1", hostname="bench", pid=0)
METRICS = Metrics(train_loss=0.0, val_loss=0.0, val_accuracy=None)


class FinishedJob:
    """Stands for a job's actor whose run has just succeeded with ``size`` bytes of weights."""

    def __init__(self, size: int) -> None:
        self.handoff = Handoff()
        self.handoff.publish(Done(metrics=METRICS, duration_s=1.0, weights=os.urandom(size)))

    def result(self, claimant: str, wait_s: float) -> dict | None:
        return self.handoff.result(claimant, wait_s)

    def chunk(self, claimant: str, index: int) -> bytes:
        return self.handoff.chunk(claimant, index)


def wait_ready(name: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while ray_runtime.actor_state(name) != "ALIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 1024], help="MiB")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    settings.data_dir = tmp / "data"
    ray_runtime.ensure_ray()
    store = JobStore(settings.data_dir)
    collector = Collector(store)
    try:
        print(f"command: .venv/bin/python bench/weights_transfer.py --sizes {' '.join(map(str, args.sizes))}")
        versions = f"Python {platform.python_version()}, torch {torch.__version__}"
        versions += f", ray {sys.modules['ray'].__version__}; chunk {CHUNK_BYTES >> 20} MiB"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {versions}")
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        for mib in args.sizes:
            job_id = f"bench{mib}"
            store.create(job_id, {}, 0)
            store.mark_running(job_id, "cpu", NODE)
            name = ray_runtime.actor_name(job_id)
            ray_runtime.start_actor(
                FinishedJob, name, (mib << 20,), num_gpus=0, max_restarts=0, max_concurrency=8
            )
            wait_ready(name)
            time.sleep(0.5)  # the constructor has published (it runs before the actor is ALIVE)
            tracemalloc.start()
            start = time.monotonic()
            assert collector.poll(job_id), "the job was not collected"
            seconds = time.monotonic() - start
            heap_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            stored = settings.data_dir / "jobs" / job_id / "model.safetensors"
            assert stored.stat().st_size == mib << 20 and store.get(job_id).status == JobStatus.SUCCEEDED
            print(
                f"{mib:>5} MiB: stored and succeeded in {seconds:6.2f} s ({mib / seconds:6.0f} MiB/s); "
                f"the API side's heap peaked at {heap_peak / 2**20:.0f} MiB"
            )
            stored.unlink()
    finally:
        store.close()
        ray_runtime.stop_embedded(settings.data_dir)


if __name__ == "__main__":
    main()
