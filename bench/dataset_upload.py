"""Upload throughput and the server's memory during an upload, against a plain file copy.

A random float32 NPZ of ``--mb`` MB (``--samples`` rows) is made in a temporary directory and:

- **copied** with ``shutil.copyfile`` plus ``fsync`` on the same disk: the ceiling for writing it;
- **uploaded** to the real app (uvicorn in its own process, no Ray) with ``POST /v1/datasets``,
  an httpx client streaming the file as ``multipart/form-data``. The answer comes once the file is
  on disk (synced, renamed) and described (every array read again, chunk by chunk, for its
  min/max/mean), so the upload's MB/s covers both.

The server's RSS is sampled from ``/proc/<pid>/status`` every 10 ms from just before the upload
to its answer: its peak is set against its idle RSS (after start-up and a first request). The
upload streams to disk, so the peak should stay near idle, whatever ``--mb``.

    .venv/bin/python bench/dataset_upload.py --mb 500      # about a minute on a quiet machine
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import clean_env, free_port, stop, uvicorn_command, wait_for  # noqa: E402

MB = 1_000_000


def make_npz(path: Path, mb: int, samples: int) -> None:
    """A float32 array of about ``mb`` MB, ``samples`` rows, and int64 labels, written in chunks."""
    features = max(1, mb * MB // (4 * samples))
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(path.with_suffix(".npy"), "w+", np.float32, (samples, features))
    for start in range(0, samples, 4096):
        x[start : start + 4096] = rng.random((min(4096, samples - start), features), dtype=np.float32)
    x.flush()
    del x
    with zipfile.ZipFile(path, "w") as archive:  # np.savez's layout: one stored .npy per array
        archive.write(path.with_suffix(".npy"), "x.npy")
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, rng.integers(0, 10, samples))
    path.with_suffix(".npy").unlink()


def copy_seconds(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    dst.unlink()
    return seconds


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, rss_bytes(self.pid))


def upload(path: Path, work: Path, size: int) -> tuple[float, int, int, dict]:
    """Seconds of the upload, the server's idle and peak RSS, and its answer."""
    env = clean_env(
        MB_DATA_DIR=str(work / "data"), MB_RAY_EAGER_START="false", MB_MAX_DATASET_BYTES=str(size + MB)
    )
    port = free_port()
    log = open(work / "uvicorn.log", "wb")  # noqa: SIM115 - closed below, after the server
    server = subprocess.Popen(
        uvicorn_command(port, "--log-level", "warning"), cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the server", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200)
        httpx.get(f"{url}/v1/datasets", timeout=30).raise_for_status()  # the store opened, migrated
        time.sleep(1)
        idle = rss_bytes(server.pid)
        sampler = PeakRSS(server.pid)
        sampler.start()
        start = time.perf_counter()
        with open(path, "rb") as f:
            response = httpx.post(f"{url}/v1/datasets", files={"file": (path.name, f)}, timeout=3600)
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        response.raise_for_status()
        return seconds, idle, max(sampler.peak, idle), response.json()
    finally:
        stop(server)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the NPZ file, in MB")
    parser.add_argument("--samples", type=int, default=100_000, help="its rows (MB_MAX_DATASET_SAMPLES)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-upload-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        path = work / "bench.npz"
        make_npz(path, args.mb, args.samples)
        size = path.stat().st_size
        copy = copy_seconds(path, work / "copy.npz")
        seconds, idle, peak, answer = upload(path, work, size)
    print(
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}"
    )
    print(f"command: .venv/bin/python bench/dataset_upload.py --mb {args.mb} --samples {args.samples}")
    print(f"file: {size / MB:.0f} MB NPZ, arrays {[(a['name'], a['shape']) for a in answer['arrays']]}")
    print(f"plain copy + fsync: {copy:6.2f} s  {size / MB / copy:7.1f} MB/s")
    rate = size / MB / seconds
    print(f"POST /v1/datasets:  {seconds:6.2f} s  {rate:7.1f} MB/s (streamed to disk, synced, described)")
    idle_mib, peak_mib = idle / 2**20, peak / 2**20
    print(f"server RSS: idle {idle_mib:.0f} MiB, peak during the upload {peak_mib:.0f} MiB", end="")
    print(f" (+{peak_mib - idle_mib:.0f} MiB)")


if __name__ == "__main__":
    main()
